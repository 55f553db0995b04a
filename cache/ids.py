"""Site ids and entry ids: an entry's id names its site and where its answer comes from."""

from __future__ import annotations

import hashlib
import re
from typing import TypeGuard

# Site ids become part of Redis keys and entry ids: keep them to a safe alphabet.
_SITE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def is_site_id(site_id: object) -> TypeGuard[str]:
    return isinstance(site_id, str) and _SITE_ID.match(site_id) is not None


def check_site_id(site_id: object) -> None:
    """ValueError for a site id that cannot name Redis keys (the writers' precondition)."""
    if not is_site_id(site_id):
        raise ValueError(f"invalid site id {site_id!r}")


def faq_entry_id(site_id: str, faq_id: int) -> str:
    return f"{site_id}:faq:{faq_id}"


def generated_entry_id(site_id: str, normalized_question: str) -> str:
    """One id per distinct normalized question: offers of the same question meet here."""
    digest = hashlib.sha256(normalized_question.encode()).hexdigest()[:20]
    return f"{site_id}:gen:{digest}"


def site_of(entry_id: str) -> str:
    return entry_id.split(":", 1)[0]


def is_generated(entry_id: str) -> bool:
    return ":gen:" in entry_id


def is_faq(entry_id: str) -> bool:
    return ":faq:" in entry_id
