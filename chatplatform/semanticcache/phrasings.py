"""Questions the cache missed, turned into FAQ data in one step: a phrasing of an existing FAQ,
or a new FAQ. Used by the near-miss page, generated-entry promotion and the agent inbox.

The FAQ's post-commit signal syncs it into the cache (served from then on); the question's
near-miss listings are dropped, since it is answered now.
"""

from __future__ import annotations

import logging

import redis
from django.db import transaction

from chatplatform.faq.models import FAQ, FAQVariant
from chatplatform.semanticcache.service import get_cache
from chatplatform.tenants.models import Site

logger = logging.getLogger(__name__)


def max_phrasing_chars() -> int:
    return FAQVariant._meta.get_field("text").max_length or 0


def max_question_chars() -> int:
    return FAQ._meta.get_field("question").max_length or 0


def add_phrasing(faq: FAQ, question: str) -> bool:
    """Add `question` as a phrasing of `faq`; False when it had it already. The caller checks
    the length (max_phrasing_chars) and that the FAQ is of the right site."""
    with transaction.atomic():
        _, created = FAQVariant.objects.get_or_create(faq=faq, text=question)
    return created


def new_faq(site: Site, question: str, answer: str) -> tuple[FAQ, bool]:
    """An FAQ with this question and answer; (faq, created). The same pair again is not made
    twice: two FAQs with one question compete, and the cache then refuses it as ambiguous."""
    question = question[: max_question_chars()]
    with transaction.atomic():
        faq = FAQ.objects.filter(site=site, question=question, answer=answer).first()
        if faq is not None:
            return faq, False
        return FAQ.objects.create(site=site, question=question, answer=answer), True


def forget_near_misses(site: Site, question: str) -> int | None:
    """Drop the question's near-miss listings; None when the cache did not answer (logged)."""
    try:
        return get_cache().dismiss_near_misses(str(site.pk), question)
    except redis.RedisError:
        logger.exception("cache: near misses of site %s not dismissed", site.pk)
        return None
