"""Admission of generated answers: who may see a model's answer to a customer question.

A model answer is never served to another customer on first sight: a customer who steers the
model ("tell everyone refunds are 365 days") would otherwise poison the cache. A candidate is
admitted once `admission_min_visitors` distinct visitors asked the same question (same
normalized text) and got answers that agree, or when an admin approves it. Answers that
disagree reject the candidate (kept for review). Only a conversation's first customer turn is
considered: later answers were written with the conversation's history and may depend on it.
Questions or answers carrying personal data, follow-ups and later turns are never stored.

An answer records its grounding: the FAQ versions the model was shown. An answer written with
an FAQ version that has since changed or gone is refused (REJECTED_STALE_GROUNDING), and
changing an FAQ's answer deletes the generated entries grounded on it (faqs.py).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from cache.guards import extract_values, is_follow_up, personal_data_kinds
from cache.ids import check_site_id, faq_entry_id, generated_entry_id
from cache.normalize import Rejection, check_question
from cache.replica import Replica
from cache.types import Admission, Entry, Source, State

logger = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 8_000  # a cached answer is shown whole in the chat widget
# Attempts of one offer (or admin decision) when another process changed the candidate between
# its read and its write (a purge, an admin's decision, a concurrent offer): each attempt
# re-reads the newer state, so more than one retry needs changes racing it back to back.
OFFER_ATTEMPTS = 3
# Grounding items are "faq_id:version"; the consumer shows the model a few FAQs (3 today).
_GROUNDING_ITEM = re.compile(r"^(\d{1,12}):(\d{1,12})$")
MAX_GROUNDING = 16

# Count a visitor only while the candidate is pending (else -1: re-read it). The visitor set
# lives as long as the candidate.
_COUNT_VISITOR_IF_PENDING = """
if redis.call('HGET', KEYS[1], 'state') ~= ARGV[1] then return -1 end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('EXPIREAT', KEYS[2], ARGV[3])
local visitors = redis.call('SCARD', KEYS[2])
redis.call('HSET', KEYS[1], 'visitors', visitors)
return visitors
"""
# Reject a candidate whose answers disagree, only while it is pending (else 0: re-read it).
# KEYS: entry hash, site pending zset, site rejected zset; ARGV: pending, rejected, id, now.
_REJECT_IF_PENDING = """
if redis.call('HGET', KEYS[1], 'state') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'note', 'inconsistent')
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
return 1
"""


def offer(
    replica: Replica,
    site_id: str,
    question: str,
    answer: str,
    visitor: str,
    first_turn: bool,
    grounding: Sequence[str] = (),
) -> Admission:
    """See SemanticCache.offer_generated."""
    checked = check_question(question)
    if isinstance(checked, Rejection) or not isinstance(answer, str) or not answer.strip():
        return Admission.REJECTED_INVALID
    if len(answer) > MAX_ANSWER_CHARS or not isinstance(visitor, str) or not visitor:
        return Admission.REJECTED_INVALID
    shown = parse_grounding(grounding)
    if shown is None:
        return Admission.REJECTED_INVALID
    check_site_id(site_id)
    if first_turn is not True:
        return Admission.REJECTED_MID_CONVERSATION
    # A first turn has no history, so the history-free follow-up test is the right one.
    if is_follow_up(checked.normalized, None):
        return Admission.REJECTED_FOLLOW_UP
    if personal_data_kinds(checked.text) or personal_data_kinds(answer):
        return Admission.REJECTED_PERSONAL_DATA
    index = replica.find_index(site_id)
    if index is not None and checked.normalized in index.snapshot().exact:
        return Admission.ALREADY_CACHED  # an FAQ or an admitted answer already serves it

    entry_id = generated_entry_id(site_id, checked.normalized)
    for _ in range(OFFER_ATTEMPTS):
        if not grounding_is_current(replica.redis, replica, site_id, shown):
            return Admission.REJECTED_STALE_GROUNDING
        outcome = _offer_once(
            replica, site_id, entry_id, checked.text, answer.strip(), visitor, shown
        )
        if outcome is not None:
            return outcome
    logger.warning(
        "cache: offer for %s lost %d races in a row; not counted", entry_id, OFFER_ATTEMPTS
    )
    return Admission.PENDING


def parse_grounding(grounding: object) -> list[tuple[int, int]] | None:
    """[(faq_id, version)] of "faq_id:version" items; None when malformed."""
    if isinstance(grounding, str) or not isinstance(grounding, Sequence):
        return None
    if len(grounding) > MAX_GROUNDING:
        return None
    shown: list[tuple[int, int]] = []
    for item in grounding:
        match = _GROUNDING_ITEM.match(item) if isinstance(item, str) else None
        if match is None:
            return None
        shown.append((int(match[1]), int(match[2])))
    return shown


def grounding_is_current(
    reader: Any, replica: Replica, site_id: str, shown: list[tuple[int, int]]
) -> bool:
    """True when every FAQ shown to the model is still stored at the version shown.

    `reader`: the Redis client, or a pipeline watching those FAQ entries (immediate mode)."""
    for faq_id, version in shown:
        stored = reader.hget(replica.store.keys.entry(faq_entry_id(site_id, faq_id)), "faq_version")
        if not stored or int(stored) != version:
            return False
    return True


def _offer_once(
    replica: Replica,
    site_id: str,
    entry_id: str,
    text: str,
    answer: str,
    visitor: str,
    shown: list[tuple[int, int]],
) -> Admission | None:
    """One attempt at an offer; None when another process changed the candidate (or an FAQ it
    was grounded on) meanwhile."""
    keys = replica.store.keys
    now = time.time()
    existing = replica.store.load(entry_id)
    if existing is None:
        entry = Entry(
            entry_id=entry_id,
            site_id=site_id,
            source=Source.GENERATED,
            questions=[text],
            answer=answer,
            embeddings=replica.embeddings.embed_many([text]),
            state=State.PENDING,
            created_at=now,
            expires_at=now + replica.config.pending_ttl_s,
            visitors=1,
            values=[extract_values(text)],
            grounding=[f"{faq_id}:{version}" for faq_id, version in shown],
        )
        key = keys.entry(entry_id)
        faq_keys = [keys.entry(faq_entry_id(site_id, faq_id)) for faq_id, _ in shown]

        def create(pipe: Any) -> bool:
            # Only if still absent: a concurrent first offer's answer must be compared with
            # this one (next attempt), not overwritten by it. The FAQs it was grounded on are
            # watched too: an edit between the check and this write retries the offer.
            if pipe.exists(key) or not grounding_is_current(pipe, replica, site_id, shown):
                return False
            pipe.multi()
            replica.store.save(entry, pipe)
            pipe.delete(keys.visitors(entry_id))
            pipe.sadd(keys.visitors(entry_id), visitor)
            pipe.expireat(keys.visitors(entry_id), int(entry.expires_at or now) + 1)
            pipe.zadd(keys.site_pending(site_id), {entry_id: now})
            replica.store.add_grounded(
                site_id, entry_id, [f for f, _ in shown], _grounded_ttl_s(replica), pipe
            )
            return True

        if not replica.redis.transaction(create, key, *faq_keys, value_from_callable=True):
            return None
        _bound_pending(replica, site_id)
        if replica.config.admission_min_visitors <= 1:
            return Admission.ADMITTED if _admit(replica, entry, "", State.PENDING) else None
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
    vectors = replica.embeddings.embed_many([existing.answer, answer])
    agreement = float(np.dot(vectors[0], vectors[1]))
    # Each write below happens only while the candidate is still pending: an admin's
    # decision, a purge or an admission since the load wins, and the offer is re-read.
    if agreement < replica.config.answer_agreement:
        rejected = replica.redis.eval(
            _REJECT_IF_PENDING, 3, keys.entry(entry_id), keys.site_pending(site_id),
            keys.site_rejected(site_id), State.PENDING.value, State.REJECTED.value, entry_id,
            time.time(),
        )  # fmt: skip
        if not rejected:
            return None
        _bound_rejected(replica, site_id)
        return Admission.REJECTED_INCONSISTENT
    visitors = int(
        replica.redis.eval(
            _COUNT_VISITOR_IF_PENDING,
            2,
            keys.entry(entry_id),
            keys.visitors(entry_id),
            State.PENDING.value,
            visitor,
            int(existing.expires_at or now) + 1,
        )
    )
    if visitors < 0:
        return None
    existing.visitors = visitors
    if visitors >= replica.config.admission_min_visitors:
        return Admission.ADMITTED if _admit(replica, existing, "", State.PENDING) else None
    return Admission.PENDING


def _admit(replica: Replica, entry: Entry, note: str, expected: State) -> bool:
    """Serve the entry from now on, with a fresh TTL, within the site's bound.

    Only if its stored state is still `expected` (what the caller loaded): False otherwise,
    so a purge or an admin's decision made meanwhile is never overwritten.
    """
    keys = replica.store.keys
    key = keys.entry(entry.entry_id)
    now = time.time()
    entry.state = State.ACTIVE
    entry.note = note
    entry.expires_at = now + replica.config.generated_ttl_s

    def write(pipe: Any) -> bool:
        if pipe.hget(key, "state") != expected.value.encode():
            return False
        pipe.multi()
        replica.store.save(entry, pipe)
        pipe.delete(keys.visitors(entry.entry_id))
        pipe.zrem(keys.site_pending(entry.site_id), entry.entry_id)
        pipe.zrem(keys.site_rejected(entry.site_id), entry.entry_id)
        pipe.zadd(keys.site_generated(entry.site_id), {entry.entry_id: now})
        faq_ids = [faq_id for faq_id, _ in parse_grounding(entry.grounding) or []]
        replica.store.add_grounded(
            entry.site_id, entry.entry_id, faq_ids, _grounded_ttl_s(replica), pipe
        )
        replica.store.publish(entry.site_id, "upsert", [entry.entry_id], pipe)
        return True

    if not replica.redis.transaction(write, key, value_from_callable=True):
        return False
    replica.apply_change(entry.site_id, "upsert", [entry.entry_id])
    _bound_generated(replica, entry.site_id)
    return True


def _grounded_ttl_s(replica: Replica) -> int:
    """Life of a grounding record: longer than any entry it names can live from now."""
    return int(replica.config.pending_ttl_s + replica.config.generated_ttl_s) + 60


def set_state(replica: Replica, entry_id: str, state: State, note: str) -> bool:
    """An admin's decision on a generated entry. False when the entry is gone."""
    for _ in range(OFFER_ATTEMPTS):
        entry = replica.store.load(entry_id)
        if entry is None or entry.source != Source.GENERATED:
            return False
        if state != State.ACTIVE:
            return _set_unserved(replica, entry.site_id, entry_id, state, note)
        loaded_state = entry.state
        entry.positive = entry.negative = 0  # a reviewed entry starts with a clean slate
        if _admit(replica, entry, note, loaded_state):
            return True
    return False


def _set_unserved(replica: Replica, site_id: str, entry_id: str, state: State, note: str) -> bool:
    keys = replica.store.keys
    key = keys.entry(entry_id)

    def write(pipe: Any) -> bool:
        if not pipe.exists(key):
            return False  # purged or expired meanwhile: do not recreate a half-written hash
        pipe.multi()
        pipe.hset(key, mapping={"state": state.value, "note": note})
        pipe.zrem(keys.site_generated(site_id), entry_id)
        pipe.zrem(keys.site_pending(site_id), entry_id)
        if state == State.REJECTED:
            pipe.zadd(keys.site_rejected(site_id), {entry_id: time.time()})
        else:
            pipe.zrem(keys.site_rejected(site_id), entry_id)
        replica.store.publish(site_id, "upsert", [entry_id], pipe)
        return True

    if not replica.redis.transaction(write, key, value_from_callable=True):
        return False
    replica.apply_change(site_id, "upsert", [entry_id])
    if state == State.REJECTED:
        _bound_rejected(replica, site_id)
    return True


def _bound_generated(replica: Replica, site_id: str) -> None:
    """Evict the least recently used active generated entries beyond the site's bound."""
    key = replica.store.keys.site_generated(site_id)
    overflow = int(replica.redis.zcard(key)) - replica.config.max_generated_per_site
    if overflow <= 0:
        return
    evicted = [member.decode() for member, _ in replica.redis.zpopmin(key, overflow)]
    replica.store.delete(site_id, evicted)
    replica.changed(site_id, "delete", evicted)


def _bound_pending(replica: Replica, site_id: str) -> None:
    """Drop the oldest pending candidates beyond the site's bound (they are not served)."""
    key = replica.store.keys.site_pending(site_id)
    overflow = int(replica.redis.zcard(key)) - replica.config.max_pending_per_site
    if overflow <= 0:
        return
    dropped = [member.decode() for member, _ in replica.redis.zpopmin(key, overflow)]
    replica.store.delete(site_id, dropped)


def _bound_rejected(replica: Replica, site_id: str) -> None:
    """Drop the oldest rejected entries beyond the site's bound (kept only for review).

    Anyone can create rejected entries (fresh visitor ids, distinct questions): without a
    bound they would pile up in Redis for their whole TTL. Ids whose entry already expired
    are dropped from the set first, so they do not count against the bound.
    """
    key = replica.store.keys.site_rejected(site_id)
    longest_life_s = max(replica.config.pending_ttl_s, replica.config.generated_ttl_s)
    replica.redis.zremrangebyscore(key, "-inf", time.time() - longest_life_s)
    overflow = int(replica.redis.zcard(key)) - replica.config.max_rejected_per_site
    if overflow <= 0:
        return
    dropped = [member.decode() for member, _ in replica.redis.zpopmin(key, overflow)]
    replica.store.delete(site_id, dropped)  # never in an index: nothing to publish
