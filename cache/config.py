"""The cache's settings: one dataclass, each default a named constant with its reasoning."""

from __future__ import annotations

from dataclasses import dataclass

from cache.decision import SHIPPED_MIN_CONFIDENCE

DAY_S = 24 * 3600

# Generated answers go stale as products and policies change; a week of reuse captures the
# traffic bursts that make caching worthwhile while bounding how long a bad one can live.
GENERATED_TTL_S = 7 * DAY_S
# A candidate that did not gather enough visitors in a week was not frequent.
PENDING_TTL_S = 7 * DAY_S
# Per site. Each generated entry costs one index row (~1.6 KB with its embedding) per process.
MAX_GENERATED_PER_SITE = 2_000
MAX_PENDING_PER_SITE = 10_000
# A generated answer is served to everyone only after this many distinct visitors got a
# consistent answer to the same question: one customer steering the model cannot poison it.
# Visitors, not conversations: a new conversation costs one "hello", a new visitor id at least
# a fresh widget state, and the caller falls back to the client's address.
ADMISSION_MIN_VISITORS = 3
# Cosine similarity two generated answers need to count as "the same answer". Rewordings of
# one answer score ~0.9 with MiniLM; answers that differ in substance (yes vs no, 14 vs 30 days)
# usually score lower, and a disagreement only costs a cache entry, never a wrong answer.
ANSWER_AGREEMENT = 0.85
# Net thumbs-down that flag an entry (no longer served, listed for review). One net
# thumbs-down already demotes it (see decision.DEMOTION_MARGIN).
FLAG_AFTER_NET_NEGATIVE = 3
# Lookups scoring at least this (but below the serving threshold) are kept as near misses: the
# admin's list of questions that an extra FAQ phrasing would catch.
NEAR_MISS_MIN_CONFIDENCE = 0.3
MAX_NEAR_MISSES_PER_SITE = 500
# The near-miss list is refreshed on each flush: a site nobody asks any more (or one purged
# while another process still held buffered near misses) loses its list a month later
# instead of keeping it in Redis forever.
NEAR_MISS_TTL_S = 30 * DAY_S
# Rejected generated entries (answers that disagreed, or an admin's rejection) are kept for
# review until their TTL. Anyone can create them (new visitor ids, distinct questions), so they
# are bounded per site, oldest dropped: an admin reviews a list, not thousands, and 1,000
# entries of up to ~10 KB each (an 8,000-character answer, its embedding) cap a site at ~10 MB.
MAX_REJECTED_PER_SITE = 1_000
# Index rows (phrasings) one process holds over all sites. Measured by cache.benchmark: ~5.7 KB
# per row at 100k rows (the float32 embedding twice, in its entry and in the search matrix,
# plus the entry's Python objects), so 150k rows bound the index at ~0.85 GB per process.
# Past it the least recently used sites are dropped and reloaded from Redis on their next
# lookup (replica.py); only a site larger than the whole bound is never held (it misses).
MAX_ROWS_PER_PROCESS = 150_000
# Sites one process holds at once, whatever their size: each costs a few Python objects even
# when empty, and a process serving every one of many small tenants must stay bounded too.
MAX_SITES_PER_PROCESS = 5_000
# "Did you mean" suggestions on a miss show only FAQs whose nearest phrasing has at least this
# cosine with the question. Chosen by `cache.calibrate_suggestions` on the training split: the
# highest floor that costs at most one point of recall at 3 at every K (docs/benchmarks.md).
SUGGESTION_FLOOR = 0.40
# Change stream: other processes see a change within one block period plus a Redis round trip.
SYNC_BLOCK_MS = 200
# Hit counters and near misses are flushed to Redis by the sync thread, off the lookup path.
FLUSH_INTERVAL_S = 1.0
CHANGE_STREAM_MAXLEN = 100_000  # a process behind by more than this rebuilds from scratch
EMBEDDING_LRU_SIZE = 10_000  # repeated questions skip the encoder (~1.6 KB each)
# The cache's Redis client gives up on a connect, or on a reply, after these many seconds: a
# Redis that accepts connections but never answers must fail an admin's save or a flush with a
# Redis error, not hang it forever. A healthy Redis answers in milliseconds; the longest wait
# on a healthy one is the change follower's XREAD BLOCK (SYNC_BLOCK_MS, 0.2 s), so the reply
# timeout is kept well above it (SemanticCache refuses one under MIN_TIMEOUT_OVER_BLOCK_S more).
REDIS_CONNECT_TIMEOUT_S = 5.0
REDIS_SOCKET_TIMEOUT_S = 5.0
MIN_TIMEOUT_OVER_BLOCK_S = 1.0


@dataclass(frozen=True, slots=True)
class CacheConfig:
    min_confidence: float = SHIPPED_MIN_CONFIDENCE
    # "calibrated": the shipped rule (decision.py). "cosine": plain top-1 cosine against
    # `min_confidence` as the threshold, kept as the baseline the evaluation compares against.
    rule: str = "calibrated"
    key_prefix: str = "sc1"
    generated_ttl_s: int = GENERATED_TTL_S
    pending_ttl_s: int = PENDING_TTL_S
    max_generated_per_site: int = MAX_GENERATED_PER_SITE
    max_pending_per_site: int = MAX_PENDING_PER_SITE
    admission_min_visitors: int = ADMISSION_MIN_VISITORS
    answer_agreement: float = ANSWER_AGREEMENT
    flag_after_net_negative: int = FLAG_AFTER_NET_NEGATIVE
    near_miss_min_confidence: float = NEAR_MISS_MIN_CONFIDENCE
    max_near_misses_per_site: int = MAX_NEAR_MISSES_PER_SITE
    near_miss_ttl_s: int = NEAR_MISS_TTL_S
    max_rejected_per_site: int = MAX_REJECTED_PER_SITE
    max_rows_per_process: int = MAX_ROWS_PER_PROCESS
    max_sites_per_process: int = MAX_SITES_PER_PROCESS
    suggestion_floor: float = SUGGESTION_FLOOR
    sync_block_ms: int = SYNC_BLOCK_MS
    flush_interval_s: float = FLUSH_INTERVAL_S
    change_stream_maxlen: int = CHANGE_STREAM_MAXLEN
    embedding_lru_size: int = EMBEDDING_LRU_SIZE
    redis_connect_timeout_s: float = REDIS_CONNECT_TIMEOUT_S
    redis_socket_timeout_s: float = REDIS_SOCKET_TIMEOUT_S
    # Start the background thread that follows other processes' changes. Off only for
    # one-shot tools that own the Redis database (the evaluation).
    follow_changes: bool = True
