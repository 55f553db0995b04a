"""This process's copy of the cache, and how changes reach it.

Reads are served from the in-memory indexes held here (index.py) and never wait on Redis,
except the first read of a site this process does not hold: with many tenants a process holds
only the sites it served recently. At start (and after losing the change stream) it loads
every site while they fit `max_rows_per_process`; a site it does not hold is loaded from Redis
on its first lookup ("cold"), and the least recently used sites are dropped to stay within
the bound (and within `max_sites_per_process`). Memory per process is bounded whatever the
number of tenants; Redis holds them all.
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
from collections import Counter, OrderedDict

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
# After a cold site's load failed on a Redis error, cold lookups miss at once for this long.
COLD_LOAD_RETRY_S = 1.0


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
        # The sites this process holds, least recently used first.
        self._indexes: OrderedDict[str, SiteIndex] = OrderedDict()
        self._indexes_lock = threading.Lock()
        # Sites larger than the whole bound: never held (their lookups miss, logged once).
        self._too_large: set[str] = set()
        self._cold_loads_paused_until = 0.0  # monotonic; after a Redis error on a cold load
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
        """Reload the sites from Redis (at start, and after losing the stream): the ones held
        now first (most recently used first), then the others, while they fit the bound."""
        # Read the stream position first: changes made while loading are replayed after.
        self.last_change_id = self.store.last_change_id()
        with self._indexes_lock:
            recent = list(reversed(self._indexes))
        stored = set(self.store.site_ids())
        order = [site for site in recent if site in stored]
        order += sorted(stored - set(order))
        fresh: OrderedDict[str, SiteIndex] = OrderedDict()
        rows = 0
        for site_id in order:
            if len(fresh) >= self.config.max_sites_per_process:
                break
            index = self._read_site(site_id)
            site_rows = index.row_count()
            if rows + site_rows > self.config.max_rows_per_process:
                # Full: this site and the rest load on their first lookup, in place of the
                # least used (reading every remaining site here would only be thrown away).
                break
            rows += site_rows
            fresh[site_id] = index
            fresh.move_to_end(site_id, last=False)  # `order` is most recent first
        with self._apply_lock, self._indexes_lock:
            self._indexes = fresh
            self._too_large.clear()
        self._policies = self.store.policies()
        if len(fresh) < len(stored):
            logger.info(
                "cache: %d of %d sites held (%d rows, bound %d); the others load on first use",
                len(fresh), len(stored), rows, self.config.max_rows_per_process,
            )  # fmt: skip

    def held(self, site_id: str) -> SiteIndex | None:
        """The site's index if this process holds it (never loads)."""
        return self._indexes.get(site_id)

    def is_cold(self, site_id: str) -> bool:
        """True when a lookup of this site would first load it from Redis."""
        return site_id not in self._indexes and site_id not in self._too_large

    def find_index(self, site_id: str) -> SiteIndex | None:
        """The site's index, loaded from Redis first if this process does not hold it; None
        for a site larger than the whole bound."""
        index = self._indexes.get(site_id)
        if index is not None:
            with self._indexes_lock:
                if site_id in self._indexes:
                    self._indexes.move_to_end(site_id)
            return index
        if site_id in self._too_large:
            return None
        # Under the apply lock: a change applied after this read finds the site held (and is
        # applied to it); one applied before is in what Redis returns here.
        if time.monotonic() < self._cold_loads_paused_until:
            return None
        with self._apply_lock:
            index = self._indexes.get(site_id)
            if index is not None:
                return index
            try:
                return self._load(site_id, evict=True)
            except redis.RedisError as error:
                # A lookup never raises: this one misses, and so do other cold sites for a
                # moment instead of each waiting on an unreachable Redis.
                self._cold_loads_paused_until = time.monotonic() + COLD_LOAD_RETRY_S
                logger.warning("cache: site %s not loaded, Redis error: %s", site_id, error)
                return None

    def _load(self, site_id: str, evict: bool) -> SiteIndex | None:
        """Read the site from Redis and hold it, dropping least recently used sites to make
        room if `evict`; None when it does not fit. Caller holds the apply lock."""
        index = self._read_site(site_id)
        rows = index.row_count()
        if not evict and (
            self.row_count() + rows > self.config.max_rows_per_process
            or len(self._indexes) >= self.config.max_sites_per_process
        ):
            return None
        if not self._make_room(rows, keep=None):
            self._too_large.add(site_id)
            logger.error(
                "cache: site %s not held: its %d rows pass the process bound of %d",
                site_id, rows, self.config.max_rows_per_process,
            )  # fmt: skip
            return None
        with self._indexes_lock:
            self._indexes[site_id] = index
        return index

    def index(self, site_id: str) -> SiteIndex:
        """The site's index, created empty when missing (for callers that fill it)."""
        index = self._indexes.get(site_id)
        if index is None:
            with self._indexes_lock:
                index = self._indexes.setdefault(
                    site_id, SiteIndex(site_id, self.embeddings.dim, normalize)
                )
        return index

    def _read_site(self, site_id: str) -> SiteIndex:
        """A fresh index of the site's servable entries as Redis holds them now."""
        index = SiteIndex(site_id, self.embeddings.dim, normalize)
        for entry in self.store.load_site(site_id):
            if entry.state == State.ACTIVE and self._same_model(entry):
                index.upsert(entry)
        index.refresh()
        return index

    def _make_room(self, rows: int, keep: str | None) -> bool:
        """Drop least recently used sites (never `keep`) until `rows` more rows and one more
        site fit the bounds; False when they cannot fit even alone."""
        if rows > self.config.max_rows_per_process:
            return False
        with self._indexes_lock:
            held_rows = sum(index.row_count() for index in self._indexes.values())
            sites = len(self._indexes) + (0 if keep is not None else 1)
            for site_id in list(self._indexes):
                over_rows = held_rows + rows > self.config.max_rows_per_process
                if not over_rows and sites <= self.config.max_sites_per_process:
                    break
                if site_id == keep:
                    continue
                held_rows -= self._indexes.pop(site_id).row_count()
                sites -= 1
        return True

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
            self._too_large.discard(site_id)  # its size changed: try it again when asked
            index = self._indexes.get(site_id)
            if index is None:
                # Not held: read the whole site (this change included) while there is room;
                # else its first lookup will. Never a partial index of only the changed entries.
                self._load(site_id, evict=False)
                return
            if op == "delete":
                for entry_id in entry_ids:
                    index.remove(entry_id)
            elif op == "upsert":
                for entry_id, entry in self.store.load_many(entry_ids).items():
                    if entry is None or entry.state != State.ACTIVE or not self._same_model(entry):
                        index.remove(entry_id)
                    elif not self._room_for(entry, index.entries.get(entry_id), site_id):
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

    def _room_for(self, entry: Entry, current: Entry | None, site_id: str) -> bool:
        """Whether `entry` may replace `current` (None: a new entry) in the site's index,
        dropping other least recently used sites if the bound needs it."""
        added = entry.embeddings.shape[0] - (current.embeddings.shape[0] if current else 0)
        if added <= 0 or self.row_count() + added <= self.config.max_rows_per_process:
            return True
        return self._make_room(added, keep=site_id) and (
            self.row_count() + added <= self.config.max_rows_per_process
        )

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
