"""FAQ-derived entries: an FAQ's phrasings and answer, served at once, kept in line with it.

An FAQ entry is rewritten on every save of its FAQ (older versions never overwrite newer
ones) and removed when the FAQ is deactivated, deleted or moved. When an FAQ's answer changes
or the FAQ goes, the generated answers that were written with it in the model's prompt are
deleted: they may repeat the old facts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from cache.guards import extract_values
from cache.ids import check_site_id, faq_entry_id, is_faq
from cache.normalize import CheckedQuestion, check_question
from cache.replica import Replica
from cache.types import Entry, Source

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FaqRecord:
    """What sync_faq needs from one FAQ (the management command's rebuild passes a list)."""

    faq_id: int
    version: int
    question: str
    variants: list[str]
    answer: str
    active: bool


def sync_faq(replica: Replica, site_id: str, faq: FaqRecord) -> bool:
    """Create or refresh the FAQ's entry (or remove it when inactive). True if written.

    An older version than the one stored, or one not newer than a removal, is ignored
    (atomically, see Store.save_faq_if_newest), so out-of-order syncs cannot bring back a
    stale answer nor a deactivated FAQ.
    """
    check_site_id(site_id)
    if not faq.active:
        remove_faq(replica, site_id, faq.faq_id, faq.version)
        return False
    entry_id = faq_entry_id(site_id, faq.faq_id)
    phrasings: dict[str, str] = {}
    for text in [faq.question, *faq.variants]:
        checked = check_question(text)
        if isinstance(checked, CheckedQuestion):
            phrasings.setdefault(checked.normalized, checked.text)
    if not phrasings or not faq.answer.strip():
        remove_faq(replica, site_id, faq.faq_id, faq.version)
        return False
    questions = list(phrasings.values())
    entry = Entry(
        entry_id=entry_id,
        site_id=site_id,
        source=Source.FAQ,
        questions=questions,
        answer=faq.answer,
        embeddings=replica.embeddings.embed_many(questions),
        faq_id=faq.faq_id,
        faq_version=faq.version,
        created_at=time.time(),
        values=[extract_values(q) for q in questions],
    )
    previous_answer = replica.redis.hget(replica.store.keys.entry(entry_id), "answer")
    if not replica.store.save_faq_if_newest(entry):
        return False
    replica.apply_change(site_id, "upsert", [entry_id])
    if previous_answer is not None and previous_answer.decode() != faq.answer:
        drop_grounded_on(replica, site_id, faq.faq_id)  # they may repeat the old answer
    return True


def remove_faq(replica: Replica, site_id: str, faq_id: int, version: int | None = None) -> bool:
    """Stop serving the FAQ on this site. True if an entry was deleted.

    `version`: the FAQ version removed (deactivated, moved to another site); None when the
    FAQ was deleted. A tombstone keeps late syncs of that version or older out.
    """
    check_site_id(site_id)
    entry_id = faq_entry_id(site_id, faq_id)
    outcome = replica.store.remove_faq_entry(site_id, entry_id, version)
    if outcome == "overtaken":
        return False  # a newer version is stored and stays served
    replica.apply_change(site_id, "delete", [entry_id])
    drop_grounded_on(replica, site_id, faq_id)
    return outcome == "deleted"


def drop_grounded_on(replica: Replica, site_id: str, faq_id: int) -> int:
    """Delete the generated entries (any state) whose answer was written with this FAQ
    shown to the model: its answer changed or it is gone, so they may state old facts.
    Returns how many were deleted."""
    ids = replica.store.pop_grounded(site_id, faq_id)
    if not ids:
        return 0
    count = replica.store.delete(site_id, ids)
    replica.changed(site_id, "delete", ids)
    logger.info(
        "cache: FAQ %s of site %s changed; %d generated entries dropped", faq_id, site_id, count
    )
    return count


def rebuild_site_faqs(replica: Replica, site_id: str, faqs: list[FaqRecord]) -> int:
    """Make the site's FAQ entries exactly `faqs` (the management command). Returns count."""
    check_site_id(site_id)
    wanted = {faq_entry_id(site_id, f.faq_id) for f in faqs if f.active}
    stale = [
        entry_id
        for entry_id in replica.store.site_entry_ids(site_id)
        if is_faq(entry_id) and entry_id not in wanted
    ]
    if stale:
        replica.store.delete(site_id, stale)
        replica.changed(site_id, "delete", stale)
        for entry_id in stale:
            drop_grounded_on(replica, site_id, int(entry_id.rsplit(":", 1)[1]))
    return sum(sync_faq(replica, site_id, faq) for faq in faqs)
