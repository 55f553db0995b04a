"""The FAQs nearest a question, whatever their confidence: prompt grounding and suggestions.

Only curated FAQ entries are suggested (generated answers are never offered as "the FAQ").
Suggestions are optional help: any failure returns no suggestions, never an error.
"""

from __future__ import annotations

import logging

import numpy as np

from cache.index import nearest_entries
from cache.normalize import CheckedQuestion, Rejection, check_question
from cache.replica import Replica
from cache.types import Suggestion

logger = logging.getLogger(__name__)

MAX_SUGGESTIONS = 10


def nearest_faqs(replica: Replica, site_id: str, question: str, k: int) -> list[Suggestion]:
    """The k FAQs nearest the question (any confidence), best first; [] on bad input."""
    checked = _checked_input(replica, site_id, question, k)
    if checked is None:
        return []
    try:
        return _nearest(replica, site_id, replica.embeddings.embed(checked.text), k)
    except Exception:  # noqa: BLE001 - suggestions are optional help, never an error
        logger.exception("cache: suggestions failed")
        return []


async def anearest_faqs(replica: Replica, site_id: str, question: str, k: int) -> list[Suggestion]:
    checked = _checked_input(replica, site_id, question, k)
    if checked is None:
        return []
    try:
        return _nearest(replica, site_id, await replica.embeddings.aembed(checked.text), k)
    except Exception:  # noqa: BLE001 - see nearest_faqs
        logger.exception("cache: suggestions failed")
        return []


def _checked_input(
    replica: Replica, site_id: object, question: object, k: int
) -> CheckedQuestion | None:
    if not isinstance(site_id, str) or replica.find_index(site_id) is None:
        return None
    checked = check_question(question)
    if isinstance(checked, Rejection) or not 0 < k <= MAX_SUGGESTIONS:
        return None
    return checked


def _nearest(replica: Replica, site_id: str, vector: np.ndarray, k: int) -> list[Suggestion]:
    index = replica.find_index(site_id)
    if index is None:
        return []
    snapshot = index.snapshot()
    found: list[Suggestion] = []
    for group, _row, score in nearest_entries(snapshot, vector, k * 3):
        entry = snapshot.entries[group]
        if entry.faq_id is None:
            continue  # only curated FAQs ground prompts and holding replies
        found.append(
            Suggestion(
                entry.faq_id,
                entry.questions[0],
                entry.answer,
                score,
                faq_version=entry.faq_version or 0,
            )
        )
        if len(found) == k:
            break
    return found
