"""SemanticCache: the one object callers use (lookups, FAQ sync, admission, feedback, admin).

Reads are served from this process's in-memory indexes (index.py) and never wait on Redis;
writes go to Redis first, are applied to this process's index at once, and reach every other
process through the change stream that sync.ChangeFollower follows (~0.2 s). Hit counters and
near misses are buffered in memory and flushed by that same thread about once a second.

Sync methods have async twins named `a...`; the lookups' twins await the batched encoder
instead of blocking the event loop; the rest run their Redis work in a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import redis

from cache import admission
from cache.config import MIN_TIMEOUT_OVER_BLOCK_S, CacheConfig
from cache.decision import Decision, servable
from cache.embedding import EmbeddingService
from cache.encoder import Encoder
from cache.guards import extract_values, is_follow_up, personal_data_kinds
from cache.index import SiteIndex, Snapshot, nearest_entries, search
from cache.normalize import CheckedQuestion, Rejection, check_question, normalize
from cache.store import Store
from cache.sync import ChangeFollower
from cache.types import (
    Entry,
    EntrySummary,
    LookupResult,
    Miss,
    NearMiss,
    Source,
    State,
    Suggestion,
    Tier,
)

logger = logging.getLogger(__name__)

# Site ids become part of Redis keys and entry ids: keep them to a safe alphabet.
_SITE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_SUGGESTIONS = 10
# record_feedback's script: KEYS entry hash, site LRU zset; ARGV field, flag threshold, entry
# id, active and flagged state names. Returns the state after, or nil for no such entry.
_FEEDBACK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
local state = redis.call('HGET', KEYS[1], 'state')
if state == ARGV[4] then
  local net = tonumber(redis.call('HGET', KEYS[1], 'neg') or '0')
    - tonumber(redis.call('HGET', KEYS[1], 'pos') or '0')
  if net >= tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[1], 'state', ARGV[5], 'note', 'feedback')
    redis.call('ZREM', KEYS[2], ARGV[3])
    state = ARGV[5]
  end
end
return state
"""
# Near misses kept in memory while Redis is away (newest kept): bounds a long outage's cost.
MAX_BUFFERED_NEAR_MISSES = 10_000


def faq_entry_id(site_id: str, faq_id: int) -> str:
    return f"{site_id}:faq:{faq_id}"


def generated_entry_id(site_id: str, normalized_question: str) -> str:
    """One id per distinct normalized question: offers of the same question meet here."""
    digest = hashlib.sha256(normalized_question.encode()).hexdigest()[:20]
    return f"{site_id}:gen:{digest}"


def site_of(entry_id: str) -> str:
    return entry_id.split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A question that passed the gate and the exact tier, ready for the semantic tier."""

    site_id: str
    checked: CheckedQuestion
    snapshot: Snapshot
    start: float


@dataclass(frozen=True, slots=True)
class FaqRecord:
    """What sync_faq needs from one FAQ (the management command's rebuild passes a list)."""

    faq_id: int
    version: int
    question: str
    variants: list[str]
    answer: str
    active: bool


class SemanticCache:
    def __init__(self, redis_url: str, encoder: Encoder, config: CacheConfig | None = None) -> None:
        self.config = config or CacheConfig()
        block_s = self.config.sync_block_ms / 1000
        if self.config.redis_socket_timeout_s < block_s + MIN_TIMEOUT_OVER_BLOCK_S:
            # Every idle XREAD BLOCK would time out: the follower would rebuild in a loop.
            raise ValueError(
                f"Redis socket timeout {self.config.redis_socket_timeout_s} s must exceed the"
                f" change stream's block ({block_s} s) by {MIN_TIMEOUT_OVER_BLOCK_S} s"
            )
        self.redis = redis.Redis.from_url(
            redis_url,
            socket_connect_timeout=self.config.redis_connect_timeout_s,
            socket_timeout=self.config.redis_socket_timeout_s,
        )
        self.store = Store(self.redis, self.config.key_prefix, self.config.change_stream_maxlen)
        self.embeddings = EmbeddingService(encoder, self.config.embedding_lru_size)
        self._indexes: dict[str, SiteIndex] = {}
        self._indexes_lock = threading.Lock()
        # Serializes apply_change: each one reads the entries from Redis and then updates the
        # index, and two interleaved (a writer thread and the sync thread) could otherwise
        # install what the first read after the second applied a newer state, e.g. put back
        # an entry whose deletion the sync thread had just applied, served until restart.
        self._apply_lock = threading.Lock()
        self._policies: dict[str, float] = {}
        self._buffer_lock = threading.Lock()
        self._hits: Counter[str] = Counter()
        self._near: list[NearMiss] = []
        self.last_change_id = "0-0"
        loaded = True
        try:
            self.rebuild()
        except redis.RedisError:
            if not self.config.follow_changes:
                raise
            # A cache must not take the chat down: start empty (every lookup misses) and let
            # the sync thread load the indexes once Redis answers.
            logger.exception("cache: Redis unavailable at start; serving misses until it is back")
            loaded = False
        self._follower: ChangeFollower | None = None
        if self.config.follow_changes:
            self._follower = ChangeFollower(self, rebuild_first=not loaded)
            self._follower.start()

    # --- process state -----------------------------------------------------------------------

    def rebuild(self) -> None:
        """Reload every site's entries from Redis (at start, and after losing the stream)."""
        # Read the stream position first: changes made while loading are replayed after.
        self.last_change_id = self.store.last_change_id()
        fresh: dict[str, SiteIndex] = {}
        rows = 0
        for site_id in self.store.site_ids():
            index = SiteIndex(site_id, self.embeddings.dim, normalize)
            for entry in self.store.load_site(site_id):
                if entry.state == State.ACTIVE and self._same_model(entry):
                    index.upsert(entry)
            index.refresh()
            site_rows = index.row_count()
            if rows + site_rows > self.config.max_rows_per_process:
                logger.error(
                    "cache: site %s not loaded: %d rows would pass the process bound of %d",
                    site_id, site_rows, self.config.max_rows_per_process,
                )  # fmt: skip
                continue
            rows += site_rows
            fresh[site_id] = index
        with self._apply_lock, self._indexes_lock:
            self._indexes = fresh
        self._policies = self.store.policies()

    def _index(self, site_id: str) -> SiteIndex:
        index = self._indexes.get(site_id)
        if index is None:
            with self._indexes_lock:
                index = self._indexes.setdefault(
                    site_id, SiteIndex(site_id, self.embeddings.dim, normalize)
                )
        return index

    def row_count(self) -> int:
        return sum(index.row_count() for index in list(self._indexes.values()))

    def apply_change(self, site_id: str, op: str, entry_ids: list[str]) -> None:
        """Bring this process's index in line with one change (from the stream or ourselves)."""
        with self._apply_lock:
            if op == "policy":
                self._policies = self.store.policies()
                return
            if op == "purge":
                self._drop_buffered(site_id)
                return
            index = self._index(site_id)
            if op == "delete":
                for entry_id in entry_ids:
                    index.remove(entry_id)
            elif op == "upsert":
                for entry_id, entry in self.store.load_many(entry_ids).items():
                    if entry is None or entry.state != State.ACTIVE or not self._same_model(entry):
                        index.remove(entry_id)
                    elif self._over_row_bound(entry, index.entries.get(entry_id)):
                        # The stored version must not stay served in place of this one.
                        index.remove(entry_id)
                        logger.error(
                            "cache: entry %s not loaded: process row bound reached", entry_id
                        )
                    else:
                        index.upsert(entry)
            else:
                logger.warning("cache: unknown change op %r ignored", op)
                return
            index.refresh()

    def _drop_buffered(self, site_id: str) -> None:
        """Forget the buffered hit counts and near misses of a purged site: flushed later,
        they would bring back the site's near-miss list that the purge deleted."""
        with self._buffer_lock:
            self._near = [miss for miss in self._near if miss.site_id != site_id]
            for entry_id in [e for e in self._hits if site_of(e) == site_id]:
                del self._hits[entry_id]

    def refresh_indexes(self) -> None:
        """Drop expired entries and rebuild dirty snapshots (sync thread, about once a second)."""
        now = time.time()
        for index in list(self._indexes.values()):
            index.drop_expired(now)
            if index.dirty:
                index.refresh()

    def _same_model(self, entry: Entry) -> bool:
        """Whether the entry was embedded by a model of this encoder's dimension.

        Redis outlives an EMBEDDING_MODEL change: entries of the old model cannot share a
        matrix with this one's (loading them failed the process's start). They are skipped;
        `rebuild_semantic_cache` rewrites the FAQ ones, generated ones expire.
        """
        if entry.embeddings.shape[1] == self.embeddings.dim:
            return True
        logger.error(
            "cache: entry %s skipped: embedded with dimension %d, the encoder's is %d",
            entry.entry_id, entry.embeddings.shape[1], self.embeddings.dim,
        )  # fmt: skip
        return False

    def _over_row_bound(self, entry: Entry, current: Entry | None) -> bool:
        """Would holding `entry` in place of `current` (None: a new entry) pass the bound?"""
        added = entry.embeddings.shape[0] - (current.embeddings.shape[0] if current else 0)
        return added > 0 and self.row_count() + added > self.config.max_rows_per_process

    def _changed(self, site_id: str, op: str, entry_ids: list[str]) -> None:
        """Publish a change already written to Redis, and apply it here at once."""
        self.store.publish(site_id, op, entry_ids)
        self.apply_change(site_id, op, entry_ids)

    def flush(self) -> None:
        """Write buffered hit counts and near misses to Redis (called by the sync thread)."""
        with self._buffer_lock:
            hits, self._hits = self._hits, Counter()
            near, self._near = self._near, []
        if not hits and not near:
            return
        keys = self.store.keys
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        for entry_id, count in hits.items():
            key = keys.entry(entry_id)
            # Only count on a hash that still exists: HINCRBY would resurrect a deleted entry.
            pipe.eval(
                "if redis.call('EXISTS', KEYS[1]) == 1 then "
                "return redis.call('HINCRBY', KEYS[1], 'hits', ARGV[1]) end return 0",
                1, key, count,
            )  # fmt: skip
            if ":gen:" in entry_id:
                pipe.zadd(keys.site_generated(site_of(entry_id)), {entry_id: now}, xx=True)
        for miss in near:
            key = keys.near_misses(miss.site_id)
            pipe.lpush(key, json.dumps(_near_dict(miss)))
            pipe.ltrim(key, 0, self.config.max_near_misses_per_site - 1)
            pipe.expire(key, self.config.near_miss_ttl_s)
        try:
            pipe.execute()
        except redis.RedisError:
            # Keep them for the next flush rather than losing them to a Redis blip. (Should
            # the connection drop after Redis ran the commands, they count twice: rarer, and
            # the smaller error for counters that rank entries.)
            with self._buffer_lock:
                self._hits.update(hits)
                self._near = (near + self._near)[-MAX_BUFFERED_NEAR_MISSES:]
            raise

    def close(self) -> None:
        if self._follower is not None:
            self._follower.stop()
            self._follower.join(timeout=5)
        try:
            self.flush()
        except redis.RedisError:
            logger.warning("cache: Redis unavailable at close; buffered hit counts are lost")
        self.redis.close()

    # --- lookups -----------------------------------------------------------------------------

    def _miss(self, start: float, reason: Miss, confidence: float = 0.0) -> LookupResult:
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

    def _hit(self, start: float, entry: Entry, tier: Tier, confidence: float) -> LookupResult:
        with self._buffer_lock:
            self._hits[entry.entry_id] += 1
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

    def _prepare(
        self, site_id: object, question: object, history: list[str] | None
    ) -> _Prepared | LookupResult:
        """Input gate, follow-up bypass and the exact tier: everything before the encoder."""
        start = time.perf_counter()
        if not isinstance(site_id, str) or not _SITE_ID.match(site_id):
            return self._miss(start, Miss.INVALID_INPUT)
        checked = check_question(question)
        if isinstance(checked, Rejection):
            return self._miss(start, Miss(checked.reason))
        index = self._indexes.get(site_id)
        snapshot = index.snapshot() if index is not None else None
        exact_entry = snapshot.exact_entry(checked.normalized) if snapshot is not None else None
        # A question that is, word for word, a phrasing an admin wrote for an FAQ is answered by
        # that FAQ even mid-conversation: the admin wrote it to stand alone ("Can I put this in
        # the dryer?"), so the follow-up bypass, which would send it to the model, is skipped.
        # Generated entries get no such trust.
        trusted_exact = exact_entry is not None and exact_entry.faq_id is not None
        if not trusted_exact and is_follow_up(checked.normalized, history):
            return self._miss(start, Miss.FOLLOW_UP)
        if index is None or snapshot is None or snapshot.rows == 0:
            return self._miss(start, Miss.NO_ENTRY)
        if exact_entry is not None:
            if exact_entry.expires_at is not None and exact_entry.expires_at <= time.time():
                # Only this version: a re-admission applied meanwhile stays served.
                index.remove_if_same(exact_entry)
                return self._miss(start, Miss.EXPIRED)
            return self._hit(start, exact_entry, Tier.EXACT, 1.0)
        return _Prepared(site_id, checked, snapshot, start)

    def _decide(self, prepared: _Prepared, vector: np.ndarray) -> LookupResult:
        snapshot = prepared.snapshot
        decision = search(snapshot, vector, self.config.rule)
        if decision is None:
            return self._miss(prepared.start, Miss.NO_ENTRY)
        entry = snapshot.entries[decision.group]
        threshold = self._policies.get(prepared.site_id, self.config.min_confidence)
        if not servable(decision, threshold, entry.demoted):
            self._note_near_miss(prepared, entry, decision)
            return self._candidate_miss(prepared.start, Miss.LOW_CONFIDENCE, entry, decision)
        values = extract_values(prepared.checked.text)
        if values not in entry.values:
            return self._candidate_miss(prepared.start, Miss.VALUE_MISMATCH, entry, decision)
        if entry.expires_at is not None and entry.expires_at <= time.time():
            # Only this version: a re-admission applied since the snapshot stays served.
            self._index(prepared.site_id).remove_if_same(entry)
            return self._miss(prepared.start, Miss.EXPIRED)
        return self._hit(prepared.start, entry, Tier.SEMANTIC, decision.confidence)

    def _candidate_miss(
        self, start: float, reason: Miss, entry: Entry, decision: Decision
    ) -> LookupResult:
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

    def _note_near_miss(self, prepared: _Prepared, entry: Entry, decision: Decision) -> None:
        if decision.confidence < self.config.near_miss_min_confidence:
            return
        if personal_data_kinds(prepared.checked.text):
            return  # customer data is never kept in shared admin lists
        miss = NearMiss(
            site_id=prepared.site_id,
            question=prepared.checked.text,
            entry_id=entry.entry_id,
            faq_id=entry.faq_id,
            confidence=round(decision.confidence, 4),
            at=time.time(),
        )
        with self._buffer_lock:
            self._near.append(miss)

    def lookup(
        self,
        site_id: str,
        question: str,
        *,
        conversation_id: str | None = None,
        history: list[str] | None = None,
    ) -> LookupResult:
        """The cached answer for a customer question, or a miss with its reason. Never raises.

        `conversation_id` is accepted for symmetry with the consumer's call (and logging);
        served entries are shared by design, so it does not change the result.
        """
        prepared = self._prepare(site_id, question, history)
        if isinstance(prepared, LookupResult):
            return prepared
        try:
            vector = self.embeddings.embed(prepared.checked.text)
        except Exception:  # noqa: BLE001 - a broken encoder must cost a miss, not the chat
            logger.exception("cache: encoder failed; answering as a miss")
            return self._miss(prepared.start, Miss.ENCODER_ERROR)
        return self._decide(prepared, vector)

    async def alookup(
        self,
        site_id: str,
        question: str,
        *,
        conversation_id: str | None = None,
        history: list[str] | None = None,
    ) -> LookupResult:
        """Async twin of `lookup`: the encoder runs batched in its own thread."""
        prepared = self._prepare(site_id, question, history)
        if isinstance(prepared, LookupResult):
            return prepared
        try:
            vector = await self.embeddings.aembed(prepared.checked.text)
        except Exception:  # noqa: BLE001 - see lookup
            logger.exception("cache: encoder failed; answering as a miss")
            return self._miss(prepared.start, Miss.ENCODER_ERROR)
        return self._decide(prepared, vector)

    def _suggest(self, site_id: object, vector: np.ndarray, k: int) -> list[Suggestion]:
        index = self._indexes.get(site_id) if isinstance(site_id, str) else None
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

    def _suggest_input(self, site_id: object, question: object, k: int) -> CheckedQuestion | None:
        if not isinstance(site_id, str) or site_id not in self._indexes:
            return None
        checked = check_question(question)
        if isinstance(checked, Rejection) or not 0 < k <= MAX_SUGGESTIONS:
            return None
        return checked

    def nearest_faqs(self, site_id: str, question: str, k: int = 3) -> list[Suggestion]:
        """The k FAQs nearest the question (any confidence), best first; [] on bad input."""
        checked = self._suggest_input(site_id, question, k)
        if checked is None:
            return []
        try:
            return self._suggest(site_id, self.embeddings.embed(checked.text), k)
        except Exception:  # noqa: BLE001 - suggestions are optional help, never an error
            logger.exception("cache: suggestions failed")
            return []

    async def anearest_faqs(self, site_id: str, question: str, k: int = 3) -> list[Suggestion]:
        checked = self._suggest_input(site_id, question, k)
        if checked is None:
            return []
        try:
            return self._suggest(site_id, await self.embeddings.aembed(checked.text), k)
        except Exception:  # noqa: BLE001 - see nearest_faqs
            logger.exception("cache: suggestions failed")
            return []

    # --- FAQ-derived entries -----------------------------------------------------------------

    def _check_site(self, site_id: str) -> None:
        if not isinstance(site_id, str) or not _SITE_ID.match(site_id):
            raise ValueError(f"invalid site id {site_id!r}")

    def sync_faq(
        self,
        site_id: str,
        faq_id: int,
        version: int,
        question: str,
        variants: list[str],
        answer: str,
        active: bool,
    ) -> bool:
        """Create or refresh the FAQ's entry (or remove it when inactive). True if written.

        An older version than the one stored, or one not newer than a removal, is ignored
        (atomically, see Store.save_faq_if_newest), so out-of-order syncs cannot bring back a
        stale answer nor a deactivated FAQ.
        """
        self._check_site(site_id)
        if not active:
            self.remove_faq(site_id, faq_id, version)
            return False
        entry_id = faq_entry_id(site_id, faq_id)
        phrasings: dict[str, str] = {}
        for text in [question, *variants]:
            checked = check_question(text)
            if isinstance(checked, CheckedQuestion):
                phrasings.setdefault(checked.normalized, checked.text)
        if not phrasings or not answer.strip():
            self.remove_faq(site_id, faq_id, version)
            return False
        questions = list(phrasings.values())
        entry = Entry(
            entry_id=entry_id,
            site_id=site_id,
            source=Source.FAQ,
            questions=questions,
            answer=answer,
            embeddings=self.embeddings.embed_many(questions),
            faq_id=faq_id,
            faq_version=version,
            created_at=time.time(),
            values=[extract_values(q) for q in questions],
        )
        previous_answer = self.redis.hget(self.store.keys.entry(entry_id), "answer")
        if not self.store.save_faq_if_newest(entry):
            return False
        self.apply_change(site_id, "upsert", [entry_id])
        if previous_answer is not None and previous_answer.decode() != answer:
            self.drop_grounded_on(site_id, faq_id)  # they may repeat the old answer
        return True

    def remove_faq(self, site_id: str, faq_id: int, version: int | None = None) -> bool:
        """Stop serving the FAQ on this site. True if an entry was deleted.

        `version`: the FAQ version removed (deactivated, moved to another site); None when the
        FAQ was deleted. A tombstone keeps late syncs of that version or older out.
        """
        self._check_site(site_id)
        entry_id = faq_entry_id(site_id, faq_id)
        outcome = self.store.remove_faq_entry(site_id, entry_id, version)
        if outcome == "overtaken":
            return False  # a newer version is stored and stays served
        self.apply_change(site_id, "delete", [entry_id])
        self.drop_grounded_on(site_id, faq_id)
        return outcome == "deleted"

    def drop_grounded_on(self, site_id: str, faq_id: int) -> int:
        """Delete the generated entries (any state) whose answer was written with this FAQ
        shown to the model: its answer changed or it is gone, so they may state old facts.
        Returns how many were deleted."""
        ids = self.store.pop_grounded(site_id, faq_id)
        if not ids:
            return 0
        count = self.store.delete(site_id, ids)
        self._changed(site_id, "delete", ids)
        logger.info(
            "cache: FAQ %s of site %s changed; %d generated entries dropped", faq_id, site_id, count
        )
        return count

    def rebuild_site_faqs(self, site_id: str, faqs: list[FaqRecord]) -> int:
        """Make the site's FAQ entries exactly `faqs` (the management command). Returns count."""
        self._check_site(site_id)
        wanted = {faq_entry_id(site_id, f.faq_id) for f in faqs if f.active}
        stale = [
            entry_id
            for entry_id in self.store.site_entry_ids(site_id)
            if ":faq:" in entry_id and entry_id not in wanted
        ]
        if stale:
            self.store.delete(site_id, stale)
            self._changed(site_id, "delete", stale)
            for entry_id in stale:
                self.drop_grounded_on(site_id, int(entry_id.rsplit(":", 1)[1]))
        written = 0
        for faq in faqs:
            written += self.sync_faq(
                site_id, faq.faq_id, faq.version, faq.question, faq.variants, faq.answer, faq.active
            )
        return written

    # --- generated entries -------------------------------------------------------------------

    def offer_generated(
        self,
        site_id: str,
        question: str,
        answer: str,
        visitor: str,
        *,
        first_turn: bool = False,
        grounding: Sequence[str] = (),
    ) -> str:
        """Offer a model answer for caching; returns the admission state (an Admission code).

        `visitor`: who asked: the widget's visitor id, or the client's IP address when there is
        none (never the conversation id: anyone can open conversations for free). Admission
        counts distinct visitors.
        `first_turn`: True only when `question` was the conversation's first customer message,
        so the model answered it without any history. The default is the safe side: an offer
        not known to be a first turn is refused (REJECTED_MID_CONVERSATION) and counts for
        nothing, since the answer may lean on earlier turns.
        `grounding`: the FAQ versions the model was shown, as "faq_id:version" (Suggestion's
        faq_id and faq_version). An answer grounded on a version no longer stored is refused,
        and an entry is deleted when an FAQ it was grounded on changes its answer or goes.
        """
        return admission.offer(
            self, site_id, question, answer, visitor, first_turn, grounding
        ).value

    def approve_generated(self, entry_id: str) -> bool:
        """An admin's approval: the entry is served from now on (fresh TTL)."""
        return admission.set_state(self, entry_id, State.ACTIVE, note="admin")

    def reject_generated(self, entry_id: str) -> bool:
        return admission.set_state(self, entry_id, State.REJECTED, note="admin")

    def purge_generated(self, site_id: str) -> int:
        """Delete all the site's generated entries (any state). Returns how many."""
        self._check_site(site_id)
        ids = [e for e in self.store.site_entry_ids(site_id) if ":gen:" in e]
        count = self.store.delete(site_id, ids)
        self.store.delete_grounded(site_id)
        self.redis.delete(self.store.keys.site_rejected(site_id))
        if ids:
            self._changed(site_id, "delete", ids)
        return count

    def purge_site(self, site_id: str) -> int:
        """Forget everything about a site (a deleted site): entries, near misses, policy."""
        self._check_site(site_id)
        ids = self.store.site_entry_ids(site_id)
        count = self.store.delete(site_id, ids)
        self.redis.delete(
            self.store.keys.near_misses(site_id), self.store.keys.site_rejected(site_id)
        )
        self.store.delete_tombstones(site_id)
        self.store.delete_grounded(site_id)
        self.redis.srem(self.store.keys.sites, site_id)
        self.store.set_policy(site_id, None)
        self._changed(site_id, "delete", ids)
        self._changed(site_id, "policy", [])
        # Every process drops the site's buffered near misses and hit counts (processes of an
        # older version log this op as unknown and ignore it; the near-miss TTL bounds theirs).
        self._changed(site_id, "purge", [])
        return count

    def delete_entry(self, entry_id: str) -> bool:
        site_id = site_of(entry_id)
        removed = self.store.delete(site_id, [entry_id]) > 0
        self._changed(site_id, "delete", [entry_id])
        return removed

    def record_feedback(self, entry_id: str, positive: bool) -> str | None:
        """A customer's thumbs up/down on a cached answer. Returns the entry's state after.

        One net thumbs-down demotes the entry (it needs more confidence to be served); at
        `flag_after_net_negative` it is flagged: no longer served, listed for review.
        """
        if not isinstance(entry_id, str):
            return None
        # One script: the count lands only on an entry that exists (HINCRBY alone would
        # recreate a just-deleted one as a half-written hash), and the flag is decided on the
        # counts it made. A flagged generated entry leaves the LRU set, so the site's bound
        # does not evict it before an admin reviewed it (its TTL still ends it).
        state = self.redis.eval(
            _FEEDBACK,
            2,
            self.store.keys.entry(entry_id),
            self.store.keys.site_generated(site_of(entry_id)),
            "pos" if positive else "neg",
            self.config.flag_after_net_negative,
            entry_id,
            State.ACTIVE.value,
            State.FLAGGED.value,
        )
        if state is None:
            return None
        self._changed(site_of(entry_id), "upsert", [entry_id])
        return state.decode()

    # --- admin reads -------------------------------------------------------------------------

    def get_entry(self, entry_id: str) -> Entry | None:
        return self.store.load(entry_id)

    def list_generated(self, site_id: str, state: str | None = None) -> list[EntrySummary]:
        """The site's generated entries (optionally one state), most hit first."""
        return _summaries(
            e
            for e in self.store.load_site(site_id)
            if e.source == Source.GENERATED and (state is None or e.state.value == state)
        )

    def list_flagged(self, site_id: str) -> list[EntrySummary]:
        """The site's flagged entries of both kinds (FAQ and generated), most hit first.

        A flagged entry is not served until an admin restores it (`restore_entry`), approves
        it (generated) or edits its FAQ (which rewrites the entry), so it must be listed.
        """
        return _summaries(e for e in self.store.load_site(site_id) if e.state == State.FLAGGED)

    def restore_entry(self, entry_id: str) -> bool:
        """An admin's "this answer is fine": a flagged entry is served again, its thumbs reset.

        False when the entry is gone or not flagged (nothing to restore).
        """
        entry = self.store.load(entry_id)
        if entry is None or entry.state != State.FLAGGED:
            return False
        if entry.source == Source.GENERATED:
            return admission.set_state(self, entry_id, State.ACTIVE, note="admin")
        # Only while still flagged: an FAQ edit or removal since the load wins (and a removed
        # entry's hash must not be recreated half-empty).
        restored = self.redis.eval(
            "if redis.call('HGET', KEYS[1], 'state') ~= ARGV[1] then return 0 end "
            "redis.call('HSET', KEYS[1], 'state', ARGV[2], 'note', 'admin', 'pos', 0, 'neg', 0) "
            "return 1",
            1, self.store.keys.entry(entry_id), State.FLAGGED.value, State.ACTIVE.value,
        )  # fmt: skip
        if not restored:
            return False
        self._changed(entry.site_id, "upsert", [entry_id])
        return True

    def dismiss_near_misses(self, site_id: str, question: str) -> int:
        """Remove the site's near misses of this question (same normalized text), e.g. once an
        admin made it a phrasing of an FAQ. Returns how many were removed."""
        self._check_site(site_id)
        checked = check_question(question)
        if isinstance(checked, Rejection):
            return 0
        key = self.store.keys.near_misses(site_id)
        removed = 0
        for raw in set(self.redis.lrange(key, 0, -1)):
            stored = check_question(json.loads(raw).get("question"))
            if isinstance(stored, CheckedQuestion) and stored.normalized == checked.normalized:
                removed += int(self.redis.lrem(key, 0, raw))
        return removed

    def list_near_misses(self, site_id: str, limit: int = 100) -> list[NearMiss]:
        """The site's newest near misses, at most `limit` (none for a limit of 0 or less)."""
        # LRANGE 0 -1 (limit 0) or 0 -2 would return the whole list.
        limit = min(limit, self.config.max_near_misses_per_site)
        if limit <= 0:
            return []
        raw = self.redis.lrange(self.store.keys.near_misses(site_id), 0, limit - 1)
        return [NearMiss(**json.loads(item)) for item in raw]

    def set_site_policy(self, site_id: str, min_confidence: float | None) -> None:
        """Override the serving threshold for one site (None = the shipped default)."""
        self._check_site(site_id)
        self.store.set_policy(site_id, min_confidence)  # ValueError outside [0, 1]
        self._changed(site_id, "policy", [])

    # --- async twins of the writers (Redis and encoder work in a thread) ---------------------

    async def arecord_feedback(self, entry_id: str, positive: bool) -> str | None:
        return await asyncio.to_thread(self.record_feedback, entry_id, positive)


def _near_dict(miss: NearMiss) -> dict[str, object]:
    return {
        "site_id": miss.site_id,
        "question": miss.question,
        "entry_id": miss.entry_id,
        "faq_id": miss.faq_id,
        "confidence": miss.confidence,
        "at": miss.at,
    }


def _summaries(entries: Iterable[Entry]) -> list[EntrySummary]:
    ordered = sorted(entries, key=lambda e: (-e.hits, -e.created_at))
    return [
        EntrySummary(
            entry_id=e.entry_id,
            site_id=e.site_id,
            question=e.questions[0],
            answer=e.answer,
            state=e.state.value,
            hits=e.hits,
            positive=e.positive,
            negative=e.negative,
            visitors=e.visitors,
            created_at=e.created_at,
            expires_at=e.expires_at,
            source=e.source.value,
            faq_id=e.faq_id,
        )
        for e in ordered
    ]
