"""This process's copy of the cache, and how changes reach it.

Reads are served from the in-memory indexes held here (index.py) and never wait on Redis.
Writers change Redis first and then call `changed`, which publishes the change on the stream
and applies it here at once; every other process applies it when its sync thread
(sync.ChangeFollower) reads the stream (~0.2 s). Hit counters and near misses are buffered
here and flushed to Redis by that same thread about once a second.

Everything else in the package builds on this module; it imports none of them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter

import redis

from cache.config import MIN_TIMEOUT_OVER_BLOCK_S, CacheConfig
from cache.embedding import EmbeddingService
from cache.encoder import Encoder
from cache.ids import is_generated, site_of
from cache.index import SiteIndex
from cache.normalize import normalize
from cache.store import Store
from cache.types import Entry, NearMiss, State

logger = logging.getLogger(__name__)

# Near misses kept in memory while Redis is away (newest kept): bounds a long outage's cost.
MAX_BUFFERED_NEAR_MISSES = 10_000


class Replica:
    """Redis client, store, encoder service, per-site indexes, serving policies and buffers."""

    def __init__(self, redis_url: str, encoder: Encoder, config: CacheConfig) -> None:
        self.config = config
        block_s = config.sync_block_ms / 1000
        if config.redis_socket_timeout_s < block_s + MIN_TIMEOUT_OVER_BLOCK_S:
            # Every idle XREAD BLOCK would time out: the follower would rebuild in a loop.
            raise ValueError(
                f"Redis socket timeout {config.redis_socket_timeout_s} s must exceed the"
                f" change stream's block ({block_s} s) by {MIN_TIMEOUT_OVER_BLOCK_S} s"
            )
        self.redis = redis.Redis.from_url(
            redis_url,
            socket_connect_timeout=config.redis_connect_timeout_s,
            socket_timeout=config.redis_socket_timeout_s,
        )
        self.store = Store(self.redis, config.key_prefix, config.change_stream_maxlen)
        self.embeddings = EmbeddingService(encoder, config.embedding_lru_size)
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

    # --- the indexes -------------------------------------------------------------------------

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

    def find_index(self, site_id: str) -> SiteIndex | None:
        """The site's index, None when this process holds none (a site without entries)."""
        return self._indexes.get(site_id)

    def index(self, site_id: str) -> SiteIndex:
        """The site's index, created empty when missing."""
        index = self._indexes.get(site_id)
        if index is None:
            with self._indexes_lock:
                index = self._indexes.setdefault(
                    site_id, SiteIndex(site_id, self.embeddings.dim, normalize)
                )
        return index

    def threshold(self, site_id: str) -> float:
        """The confidence the site's semantic hits need (its override, else the shipped one)."""
        return self._policies.get(site_id, self.config.min_confidence)

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
            index = self.index(site_id)
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

    def changed(self, site_id: str, op: str, entry_ids: list[str]) -> None:
        """Publish a change already written to Redis, and apply it here at once."""
        self.store.publish(site_id, op, entry_ids)
        self.apply_change(site_id, op, entry_ids)

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

    # --- buffered counters -------------------------------------------------------------------

    def count_hit(self, entry_id: str) -> None:
        with self._buffer_lock:
            self._hits[entry_id] += 1

    def note_near_miss(self, miss: NearMiss) -> None:
        with self._buffer_lock:
            self._near.append(miss)

    def _drop_buffered(self, site_id: str) -> None:
        """Forget the buffered hit counts and near misses of a purged site: flushed later,
        they would bring back the site's near-miss list that the purge deleted."""
        with self._buffer_lock:
            self._near = [miss for miss in self._near if miss.site_id != site_id]
            for entry_id in [e for e in self._hits if site_of(e) == site_id]:
                del self._hits[entry_id]

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
            if is_generated(entry_id):
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


def _near_dict(miss: NearMiss) -> dict[str, object]:
    return {
        "site_id": miss.site_id,
        "question": miss.question,
        "entry_id": miss.entry_id,
        "faq_id": miss.faq_id,
        "confidence": miss.confidence,
        "at": miss.at,
    }
