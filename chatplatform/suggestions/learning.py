"""The learning loop: a chosen suggestion is evidence that the question is a phrasing of the
FAQ chosen. Once enough distinct customers confirmed the same one (`Site.confirmations_needed`),
the near-miss page lists it as "confirmed by customers" for one-click adding, or, where the site
opted in (`Site.auto_add_confirmed_phrasings`), it is added at once (listed, and undoable).

Bad actors: a confirmation counts the evidence the cache's admission counts
(chat/visitors.py: a visitor the site vouched for with a signed token, else the network address,
an IPv6 customer by its /64), never the visitor id the widget chooses, which anyone can invent;
each customer confirms a phrasing once and at most `CONFIRMATIONS_PER_HOUR` phrasings an hour
per site; a question carrying personal data (or too long, or a follow-up) is never counted,
listed or added.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from cache.guards import is_follow_up, personal_data_kinds
from cache.normalize import CheckedQuestion, check_question
from chatplatform.faq.models import FAQ, FAQVariant
from chatplatform.suggestions.models import Confirmation, ConfirmedPhrasing
from chatplatform.tenants.models import Site

logger = logging.getLogger(__name__)

# Confirmations one address may add per site and hour. A customer chooses a few suggestions in
# a conversation; a script clicking through chats to teach the cache is cut off here, and its
# later clicks still answer it, they just count for nothing.
CONFIRMATIONS_PER_HOUR = 10
MAX_PHRASING_CHARS = FAQVariant._meta.get_field("text").max_length or 500


def learnable(question: str) -> CheckedQuestion | None:
    """The question as a phrasing could store it, or None when it must never become one."""
    checked = check_question(question)
    if not isinstance(checked, CheckedQuestion) or len(checked.text) > MAX_PHRASING_CHARS:
        return None
    if personal_data_kinds(checked.text) or is_follow_up(checked.normalized, None):
        return None
    return checked


def question_key(normalized: str) -> str:
    return hashlib.sha256(normalized.encode()).hexdigest()


def confirm(site: Site, question: str, faq: FAQ, identity: str) -> ConfirmedPhrasing | None:
    """Count one customer's choice of `faq` for `question` (inside the choice's transaction).

    `identity`: who chose, as evidence the server trusts (visitors.admission_evidence; "" when
    there is none). Returns the phrasing the confirmation counted towards, or None when it
    counts for nothing (personal data, no evidence, already a phrasing, rate-limited, decided).
    """
    checked = learnable(question)
    if not identity or checked is None:
        return None
    known = {
        c.normalized for c in map(check_question, faq.phrasings()) if isinstance(c, CheckedQuestion)
    }
    if checked.normalized in known:
        return None  # the cache has this phrasing already
    now = timezone.now()
    recent = Confirmation.objects.filter(
        site=site, confirmer=identity, created_at__gte=now - timedelta(hours=1)
    ).count()
    if recent >= CONFIRMATIONS_PER_HOUR:
        logger.info("suggestions: confirmations of %s on site %s rate-limited", identity, site.pk)
        return None
    phrasing, _ = ConfirmedPhrasing.objects.select_for_update().get_or_create(
        faq=faq,
        question_key=question_key(checked.normalized),
        defaults={"site": site, "text": checked.text, "last_confirmed_at": now},
    )
    if phrasing.state != ConfirmedPhrasing.State.OPEN:
        return None
    _, created = Confirmation.objects.get_or_create(
        phrasing=phrasing, confirmer=identity, defaults={"site": site}
    )
    if not created:
        return phrasing  # this customer confirmed it before: counted once
    phrasing.confirmers = phrasing.confirmations.count()
    phrasing.last_confirmed_at = now
    phrasing.save(update_fields=["confirmers", "last_confirmed_at"])
    if site.auto_add_confirmed_phrasings and phrasing.confirmers >= site.confirmations_needed:
        add_phrasing(phrasing, automatic=True)
    return phrasing


def add_phrasing(phrasing: ConfirmedPhrasing, *, automatic: bool) -> FAQVariant:
    """Make the confirmed question a phrasing of its FAQ (the cache follows the FAQ's sync)."""
    with transaction.atomic():
        variant, _ = FAQVariant.objects.get_or_create(faq=phrasing.faq, text=phrasing.text)
        phrasing.variant = variant
        phrasing.state = (
            ConfirmedPhrasing.State.AUTO_ADDED if automatic else ConfirmedPhrasing.State.ADDED
        )
        phrasing.save(update_fields=["variant", "state"])
    logger.info(
        "suggestions: %r added as a phrasing of FAQ %s (%s, %d customers)",
        phrasing.text, phrasing.faq_id, phrasing.state, phrasing.confirmers,
    )  # fmt: skip
    return variant


def dismiss(phrasing: ConfirmedPhrasing) -> None:
    """An admin's "no": not listed again; an added phrasing is taken out of its FAQ (undo)."""
    with transaction.atomic():
        if phrasing.variant is not None:
            phrasing.variant.delete()  # its FAQ's sync stops serving it
        phrasing.variant = None
        phrasing.state = ConfirmedPhrasing.State.DISMISSED
        phrasing.save(update_fields=["variant", "state"])


def confirmed(site: Site) -> list[ConfirmedPhrasing]:
    """Questions confirmed by enough customers and not decided yet, most confirmed first."""
    return list(
        ConfirmedPhrasing.objects.filter(
            site=site,
            state=ConfirmedPhrasing.State.OPEN,
            confirmers__gte=site.confirmations_needed,
            faq__is_active=True,
        )
        .select_related("faq")
        .order_by("-confirmers", "-last_confirmed_at")
    )


def added_automatically(site: Site, limit: int = 50) -> list[ConfirmedPhrasing]:
    """The newest phrasings added without review (each can be undone)."""
    return list(
        ConfirmedPhrasing.objects.filter(site=site, state=ConfirmedPhrasing.State.AUTO_ADDED)
        .select_related("faq")
        .order_by("-last_confirmed_at")[:limit]
    )
