"""SemanticCache: the one object callers use (lookups, FAQ sync, admission, feedback, admin).

It holds this process's copy of the cache (replica.py) and the thread that keeps it in line
with every other process (sync.py), and hands each call to the module that does that job:

    lookup.py       cached answer or miss         suggestions.py  nearest FAQs, did you mean
    faqs.py         FAQ-derived entries           admission.py    generated answers
    feedback.py     thumbs up/down                admin_ops.py    admin reads and actions

Each of those builds on replica.py and none imports this module: data flows one way.
Sync methods have async twins named `a...`; the lookups' twins await the batched encoder
instead of blocking the event loop; the rest run their Redis work in a thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import redis

from cache import admin_ops, admission, faqs, feedback, lookup, suggestions
from cache.config import CacheConfig
from cache.encoder import Encoder
from cache.faqs import FaqRecord
from cache.ids import is_site_id
from cache.replica import Replica
from cache.sync import ChangeFollower
from cache.types import Entry, EntrySummary, LookupResult, NearMiss, Suggestion

logger = logging.getLogger(__name__)


class SemanticCache:
    def __init__(self, redis_url: str, encoder: Encoder, config: CacheConfig | None = None) -> None:
        self.replica = Replica(redis_url, encoder, config or CacheConfig())
        self.config = self.replica.config
        self.redis = self.replica.redis
        self.store = self.replica.store
        self.embeddings = self.replica.embeddings
        loaded = True
        try:
            self.replica.rebuild()
        except redis.RedisError:
            if not self.config.follow_changes:
                raise
            # A cache must not take the chat down: start empty (every lookup misses) and let
            # the sync thread load the indexes once Redis answers.
            logger.exception("cache: Redis unavailable at start; serving misses until it is back")
            loaded = False
        self._follower: ChangeFollower | None = None
        if self.config.follow_changes:
            self._follower = ChangeFollower(self.replica, rebuild_first=not loaded)
            self._follower.start()

    # --- process state (replica.py) ----------------------------------------------------------

    def rebuild(self) -> None:
        self.replica.rebuild()

    def apply_change(self, site_id: str, op: str, entry_ids: list[str]) -> None:
        self.replica.apply_change(site_id, op, entry_ids)

    def refresh_indexes(self) -> None:
        self.replica.refresh_indexes()

    def flush(self) -> None:
        self.replica.flush()

    def row_count(self) -> int:
        return self.replica.row_count()

    @property
    def last_change_id(self) -> str:
        return self.replica.last_change_id

    def close(self) -> None:
        if self._follower is not None:
            self._follower.stop()
            self._follower.join(timeout=5)
        try:
            self.replica.flush()
        except redis.RedisError:
            logger.warning("cache: Redis unavailable at close; buffered hit counts are lost")
        self.redis.close()

    # --- lookups (lookup.py, suggestions.py) -------------------------------------------------

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
        return lookup.lookup(self.replica, site_id, question, history)

    async def alookup(
        self,
        site_id: str,
        question: str,
        *,
        conversation_id: str | None = None,
        history: list[str] | None = None,
    ) -> LookupResult:
        """Async twin of `lookup`: the encoder runs batched in its own thread."""
        return await lookup.alookup(self.replica, site_id, question, history)

    async def aprefetch(self, site_id: str) -> None:
        """Hold the site's index in this process now (read from Redis in a thread if it is
        not held), so that its next lookup is not the one that pays for reading it."""
        if is_site_id(site_id) and self.replica.is_cold(site_id):
            await asyncio.to_thread(self.replica.find_index, site_id)

    def nearest_faqs(self, site_id: str, question: str, k: int = 3) -> list[Suggestion]:
        """The k FAQs nearest the question (any confidence), best first; [] on bad input."""
        return suggestions.nearest_faqs(self.replica, site_id, question, k)

    async def anearest_faqs(self, site_id: str, question: str, k: int = 3) -> list[Suggestion]:
        return await suggestions.anearest_faqs(self.replica, site_id, question, k)

    def suggest(
        self, site_id: str, question: str, result: LookupResult, k: int = 3
    ) -> list[Suggestion]:
        """Did-you-mean: up to k FAQs to offer after `result`, this question's lookup ([]
        after a hit, a follow-up or a value mismatch; only FAQs at or above the floor)."""
        return suggestions.suggest(self.replica, site_id, question, result, k)

    async def asuggest(
        self, site_id: str, question: str, result: LookupResult, k: int = 3
    ) -> list[Suggestion]:
        return await suggestions.asuggest(self.replica, site_id, question, result, k)

    # --- FAQ-derived entries (faqs.py) -------------------------------------------------------

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
        """Create or refresh the FAQ's entry (or remove it when inactive). True if written."""
        record = FaqRecord(faq_id, version, question, variants, answer, active)
        return faqs.sync_faq(self.replica, site_id, record)

    def remove_faq(self, site_id: str, faq_id: int, version: int | None = None) -> bool:
        """Stop serving the FAQ on this site. True if an entry was deleted."""
        return faqs.remove_faq(self.replica, site_id, faq_id, version)

    def drop_grounded_on(self, site_id: str, faq_id: int) -> int:
        return faqs.drop_grounded_on(self.replica, site_id, faq_id)

    def rebuild_site_faqs(self, site_id: str, records: list[FaqRecord]) -> int:
        """Make the site's FAQ entries exactly `records`. Returns how many were written."""
        return faqs.rebuild_site_faqs(self.replica, site_id, records)

    # --- generated entries (admission.py) ----------------------------------------------------

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
            self.replica, site_id, question, answer, visitor, first_turn, grounding
        ).value

    # --- feedback (feedback.py) --------------------------------------------------------------

    def record_feedback(self, entry_id: str, positive: bool) -> str | None:
        """A customer's thumbs up/down on a cached answer. Returns the entry's state after."""
        return feedback.record_feedback(self.replica, entry_id, positive)

    async def arecord_feedback(self, entry_id: str, positive: bool) -> str | None:
        return await asyncio.to_thread(self.record_feedback, entry_id, positive)

    # --- admin (admin_ops.py) ----------------------------------------------------------------

    def get_entry(self, entry_id: str) -> Entry | None:
        return self.store.load(entry_id)

    def approve_generated(self, entry_id: str) -> bool:
        """An admin's approval: the entry is served from now on (fresh TTL)."""
        return admin_ops.approve_generated(self.replica, entry_id)

    def reject_generated(self, entry_id: str) -> bool:
        return admin_ops.reject_generated(self.replica, entry_id)

    def list_generated(self, site_id: str, state: str | None = None) -> list[EntrySummary]:
        """The site's generated entries (optionally one state), most hit first."""
        return admin_ops.list_generated(self.replica, site_id, state)

    def purge_generated(self, site_id: str) -> int:
        """Delete all the site's generated entries (any state). Returns how many."""
        return admin_ops.purge_generated(self.replica, site_id)

    def list_flagged(self, site_id: str) -> list[EntrySummary]:
        """The site's flagged entries of both kinds (FAQ and generated), most hit first."""
        return admin_ops.list_flagged(self.replica, site_id)

    def restore_entry(self, entry_id: str) -> bool:
        """A flagged entry is served again, its thumbs reset. False when gone or not flagged."""
        return admin_ops.restore_entry(self.replica, entry_id)

    def delete_entry(self, entry_id: str) -> bool:
        return admin_ops.delete_entry(self.replica, entry_id)

    def list_near_misses(self, site_id: str, limit: int = 100) -> list[NearMiss]:
        """The site's newest near misses, at most `limit` (none for a limit of 0 or less)."""
        return admin_ops.list_near_misses(self.replica, site_id, limit)

    def dismiss_near_misses(self, site_id: str, question: str) -> int:
        """Remove the site's near misses of this question. Returns how many were removed."""
        return admin_ops.dismiss_near_misses(self.replica, site_id, question)

    def set_site_policy(self, site_id: str, min_confidence: float | None) -> None:
        """Override the serving threshold for one site (None = the shipped default)."""
        admin_ops.set_site_policy(self.replica, site_id, min_confidence)

    def purge_site(self, site_id: str) -> int:
        """Forget everything about a site (a deleted site): entries, near misses, policy."""
        return admin_ops.purge_site(self.replica, site_id)
