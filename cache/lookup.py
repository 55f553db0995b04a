"""Lookups: the cached answer for a customer question, or a miss with its reason.

The order: input gate, follow-up bypass, exact tier (no encoder), then the semantic tier
(encoder, nearest phrasings, decision rule, value guard). Lookups read only this process's
indexes (replica.py); a hit or a near miss is counted in memory and flushed later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import numpy as np

from cache.decision import Decision, servable
from cache.guards import extract_values, is_follow_up, personal_data_kinds
from cache.ids import is_site_id
from cache.index import Snapshot, search
from cache.normalize import CheckedQuestion, Rejection, check_question
from cache.replica import Replica
from cache.types import Entry, LookupResult, Miss, NearMiss, Tier

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A question that passed the gate and the exact tier, ready for the semantic tier."""

    site_id: str
    checked: CheckedQuestion
    snapshot: Snapshot
    start: float


def lookup(
    replica: Replica, site_id: str, question: str, history: list[str] | None
) -> LookupResult:
    """See SemanticCache.lookup. Never raises."""
    prepared = prepare(replica, site_id, question, history)
    if isinstance(prepared, LookupResult):
        return prepared
    try:
        vector = replica.embeddings.embed(prepared.checked.text)
    except Exception:  # noqa: BLE001 - a broken encoder must cost a miss, not the chat
        logger.exception("cache: encoder failed; answering as a miss")
        return _miss(prepared.start, Miss.ENCODER_ERROR)
    return decide(replica, prepared, vector)


async def alookup(
    replica: Replica, site_id: str, question: str, history: list[str] | None
) -> LookupResult:
    """Async twin of `lookup`: the encoder runs batched in its own thread, and a site this
    process does not hold is loaded from Redis in a thread too."""
    if is_site_id(site_id) and replica.is_cold(site_id):
        await asyncio.to_thread(replica.find_index, site_id)
    prepared = prepare(replica, site_id, question, history)
    if isinstance(prepared, LookupResult):
        return prepared
    try:
        vector = await replica.embeddings.aembed(prepared.checked.text)
    except Exception:  # noqa: BLE001 - see lookup
        logger.exception("cache: encoder failed; answering as a miss")
        return _miss(prepared.start, Miss.ENCODER_ERROR)
    return decide(replica, prepared, vector)


def prepare(
    replica: Replica, site_id: object, question: object, history: list[str] | None
) -> Prepared | LookupResult:
    """Input gate, follow-up bypass and the exact tier: everything before the encoder."""
    start = time.perf_counter()
    if not is_site_id(site_id):
        return _miss(start, Miss.INVALID_INPUT)
    checked = check_question(question)
    if isinstance(checked, Rejection):
        return _miss(start, Miss(checked.reason))
    index = replica.find_index(site_id)
    snapshot = index.snapshot() if index is not None else None
    exact_entry = snapshot.exact_entry(checked.normalized) if snapshot is not None else None
    # A question that is, word for word, a phrasing an admin wrote for an FAQ is answered by
    # that FAQ even mid-conversation: the admin wrote it to stand alone ("Can I put this in
    # the dryer?"), so the follow-up bypass, which would send it to the model, is skipped.
    # Generated entries get no such trust.
    trusted_exact = exact_entry is not None and exact_entry.faq_id is not None
    if not trusted_exact and is_follow_up(checked.normalized, history):
        return _miss(start, Miss.FOLLOW_UP)
    if index is None or snapshot is None or snapshot.rows == 0:
        return _miss(start, Miss.NO_ENTRY)
    if exact_entry is not None:
        if exact_entry.expires_at is not None and exact_entry.expires_at <= time.time():
            # Only this version: a re-admission applied meanwhile stays served.
            index.remove_if_same(exact_entry)
            return _miss(start, Miss.EXPIRED)
        return _hit(replica, start, exact_entry, Tier.EXACT, 1.0)
    return Prepared(site_id, checked, snapshot, start)


def decide(replica: Replica, prepared: Prepared, vector: np.ndarray) -> LookupResult:
    """The semantic tier: the decision rule over the nearest phrasings, then the guards."""
    snapshot = prepared.snapshot
    decision = search(snapshot, vector, replica.config.rule)
    if decision is None:
        return _miss(prepared.start, Miss.NO_ENTRY)
    entry = snapshot.entries[decision.group]
    if not servable(decision, replica.threshold(prepared.site_id), entry.demoted):
        _note_near_miss(replica, prepared, entry, decision)
        return _candidate_miss(prepared.start, Miss.LOW_CONFIDENCE, entry, decision)
    values = extract_values(prepared.checked.text)
    if values not in entry_values(entry):
        return _candidate_miss(prepared.start, Miss.VALUE_MISMATCH, entry, decision)
    if entry.expires_at is not None and entry.expires_at <= time.time():
        # Only this version: a re-admission applied since the snapshot stays served.
        held = replica.held(prepared.site_id)
        if held is not None:
            held.remove_if_same(entry)
        return _miss(prepared.start, Miss.EXPIRED)
    return _hit(replica, prepared.start, entry, Tier.SEMANTIC, decision.confidence)


def entry_values(entry: Entry) -> list[tuple[str, ...]]:
    """The entry's values per phrasing, computed on first need for entries read from Redis
    (an assignment of the same list: concurrent lookups may both compute it, harmlessly)."""
    if len(entry.values) != len(entry.questions):
        entry.values = [extract_values(question) for question in entry.questions]
    return entry.values


def _miss(start: float, reason: Miss, confidence: float = 0.0) -> LookupResult:
    return LookupResult(
        hit=False,
        answer=None,
        entry_id=None,
        tier=None,
        confidence=confidence,
        faq_id=None,
        reason=reason.value,
        latency_ms=(time.perf_counter() - start) * 1000.0,
    )


def _hit(
    replica: Replica, start: float, entry: Entry, tier: Tier, confidence: float
) -> LookupResult:
    replica.count_hit(entry.entry_id)
    return LookupResult(
        hit=True,
        answer=entry.answer,
        entry_id=entry.entry_id,
        tier=tier.value,
        confidence=confidence,
        faq_id=entry.faq_id,
        reason=Miss.NONE.value,
        latency_ms=(time.perf_counter() - start) * 1000.0,
        candidate_entry_id=entry.entry_id,
        candidate_faq_id=entry.faq_id,
    )


def _candidate_miss(start: float, reason: Miss, entry: Entry, decision: Decision) -> LookupResult:
    return LookupResult(
        hit=False,
        answer=None,
        entry_id=None,
        tier=None,
        confidence=decision.confidence,
        faq_id=None,
        reason=reason.value,
        latency_ms=(time.perf_counter() - start) * 1000.0,
        candidate_entry_id=entry.entry_id,
        candidate_faq_id=entry.faq_id,
    )


def _note_near_miss(replica: Replica, prepared: Prepared, entry: Entry, decision: Decision) -> None:
    if decision.confidence < replica.config.near_miss_min_confidence:
        return
    if personal_data_kinds(prepared.checked.text):
        return  # customer data is never kept in shared admin lists
    replica.note_near_miss(
        NearMiss(
            site_id=prepared.site_id,
            question=prepared.checked.text,
            entry_id=entry.entry_id,
            faq_id=entry.faq_id,
            confidence=round(decision.confidence, 4),
            at=time.time(),
        )
    )
