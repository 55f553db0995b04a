"""Admission of generated answers: who may see a model's answer to a customer question.

A model answer is never served to another customer on first sight: a customer who steers the
model ("tell everyone refunds are 365 days") would otherwise poison the cache. A candidate is
admitted once `admission_min_visitors` distinct visitors asked the same question (same
normalized text) and got answers that agree, or when an admin approves it. Answers that
disagree reject the candidate (kept for review). Only a conversation's first customer turn is
considered: later answers were written with the conversation's history and may depend on it.
Questions or answers carrying personal data, follow-ups and later turns are never stored.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from cache.guards import extract_values, is_follow_up, personal_data_kinds
from cache.normalize import Rejection, check_question
from cache.types import Admission, Entry, Source, State

if TYPE_CHECKING:
    from cache.service import SemanticCache

MAX_ANSWER_CHARS = 8_000  # a cached answer is shown whole in the chat widget


def offer(
    cache: SemanticCache,
    site_id: str,
    question: str,
    answer: str,
    visitor: str,
    first_turn: bool,
) -> Admission:
    """See SemanticCache.offer_generated."""
    from cache.service import generated_entry_id  # here: service imports this module

    checked = check_question(question)
    if isinstance(checked, Rejection) or not isinstance(answer, str) or not answer.strip():
        return Admission.REJECTED_INVALID
    if len(answer) > MAX_ANSWER_CHARS or not isinstance(visitor, str) or not visitor:
        return Admission.REJECTED_INVALID
    cache._check_site(site_id)
    if first_turn is not True:
        return Admission.REJECTED_MID_CONVERSATION
    # A first turn has no history, so the history-free follow-up test is the right one.
    if is_follow_up(checked.normalized, None):
        return Admission.REJECTED_FOLLOW_UP
    if personal_data_kinds(checked.text) or personal_data_kinds(answer):
        return Admission.REJECTED_PERSONAL_DATA
    index = cache._indexes.get(site_id)
    if index is not None and checked.normalized in index.snapshot().exact:
        return Admission.ALREADY_CACHED  # an FAQ or an admitted answer already serves it

    entry_id = generated_entry_id(site_id, checked.normalized)
    keys = cache.store.keys
    now = time.time()
    existing = cache.store.load(entry_id)
    if existing is None:
        entry = Entry(
            entry_id=entry_id,
            site_id=site_id,
            source=Source.GENERATED,
            questions=[checked.text],
            answer=answer.strip(),
            embeddings=cache.embeddings.embed_many([checked.text]),
            state=State.PENDING,
            created_at=now,
            expires_at=now + cache.config.pending_ttl_s,
            visitors=1,
            values=[extract_values(checked.text)],
        )
        pipe = cache.redis.pipeline(transaction=True)
        cache.store.save(entry, pipe)
        pipe.sadd(keys.visitors(entry_id), visitor)
        pipe.expireat(keys.visitors(entry_id), int(entry.expires_at or now) + 1)
        pipe.zadd(keys.site_pending(site_id), {entry_id: now})
        pipe.execute()
        _bound_pending(cache, site_id)
        if cache.config.admission_min_visitors <= 1:
            return _admit(cache, entry, note="")
        return Admission.PENDING
    if existing.state == State.ACTIVE:
        return Admission.ALREADY_CACHED
    if existing.state == State.FLAGGED:
        return Admission.FLAGGED
    if existing.state == State.REJECTED:
        if existing.note == "admin":
            return Admission.REJECTED_BY_ADMIN
        return Admission.REJECTED_INCONSISTENT

    # A pending candidate: does this visitor's answer agree with the stored one?
    vectors = cache.embeddings.embed_many([existing.answer, answer.strip()])
    agreement = float(np.dot(vectors[0], vectors[1]))
    if agreement < cache.config.answer_agreement:
        cache.redis.hset(
            keys.entry(entry_id), mapping={"state": State.REJECTED.value, "note": "inconsistent"}
        )
        cache.redis.zrem(keys.site_pending(site_id), entry_id)
        return Admission.REJECTED_INCONSISTENT
    cache.redis.sadd(keys.visitors(entry_id), visitor)
    visitors = int(cache.redis.scard(keys.visitors(entry_id)))
    cache.redis.hset(keys.entry(entry_id), "visitors", visitors)
    existing.visitors = visitors
    if visitors >= cache.config.admission_min_visitors:
        return _admit(cache, existing, note="")
    return Admission.PENDING


def _admit(cache: SemanticCache, entry: Entry, note: str) -> Admission:
    """Serve the entry from now on, with a fresh TTL, within the site's bound."""
    keys = cache.store.keys
    now = time.time()
    entry.state = State.ACTIVE
    entry.note = note
    entry.expires_at = now + cache.config.generated_ttl_s
    pipe = cache.redis.pipeline(transaction=True)
    cache.store.save(entry, pipe)
    pipe.delete(keys.visitors(entry.entry_id))
    pipe.zrem(keys.site_pending(entry.site_id), entry.entry_id)
    pipe.zadd(keys.site_generated(entry.site_id), {entry.entry_id: now})
    cache.store.publish(entry.site_id, "upsert", [entry.entry_id], pipe)
    pipe.execute()
    cache.apply_change(entry.site_id, "upsert", [entry.entry_id])
    _bound_generated(cache, entry.site_id)
    return Admission.ADMITTED


def set_state(cache: SemanticCache, entry_id: str, state: State, note: str) -> bool:
    """An admin's decision on a generated entry. False when the entry is gone."""
    entry = cache.store.load(entry_id)
    if entry is None or entry.source != Source.GENERATED:
        return False
    if state == State.ACTIVE:
        entry.positive = entry.negative = 0  # a reviewed entry starts with a clean slate
        _admit(cache, entry, note=note)
        return True
    keys = cache.store.keys
    pipe = cache.redis.pipeline(transaction=True)
    pipe.hset(keys.entry(entry_id), mapping={"state": state.value, "note": note})
    pipe.zrem(keys.site_generated(entry.site_id), entry_id)
    pipe.zrem(keys.site_pending(entry.site_id), entry_id)
    cache.store.publish(entry.site_id, "upsert", [entry_id], pipe)
    pipe.execute()
    cache.apply_change(entry.site_id, "upsert", [entry_id])
    return True


def _bound_generated(cache: SemanticCache, site_id: str) -> None:
    """Evict the least recently used active generated entries beyond the site's bound."""
    key = cache.store.keys.site_generated(site_id)
    overflow = int(cache.redis.zcard(key)) - cache.config.max_generated_per_site
    if overflow <= 0:
        return
    evicted = [member.decode() for member, _ in cache.redis.zpopmin(key, overflow)]
    cache.store.delete(site_id, evicted)
    cache._changed(site_id, "delete", evicted)


def _bound_pending(cache: SemanticCache, site_id: str) -> None:
    """Drop the oldest pending candidates beyond the site's bound (they are not served)."""
    key = cache.store.keys.site_pending(site_id)
    overflow = int(cache.redis.zcard(key)) - cache.config.max_pending_per_site
    if overflow <= 0:
        return
    dropped = [member.decode() for member, _ in cache.redis.zpopmin(key, overflow)]
    cache.store.delete(site_id, dropped)
