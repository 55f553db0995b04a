"""Prometheus metrics of the chat path, and the helpers the chat consumer calls to record them.

Two kinds of figures live here:

* Counters and histograms the web process records itself as things happen (websocket
  connections, answers by source, latency, cache lookups, SLA misses, rejections). The consumer
  calls the small helpers below; it never touches prometheus_client objects directly, so metric
  names and label sets stay in this one file.
* Inference figures that belong to other processes (GPU workers): queue depth, batch size,
  tokens/s, requests shed as overloaded and handed back. They are read from Redis when
  Prometheus scrapes, by `InferenceCollector`, so the
  web process reports them without talking to the workers.

This module imports only prometheus_client, redis and the inference contract (plain
dataclasses), so importing it from the consumer is cheap.
Metrics are per process: each ASGI process serves its own /metrics (scrape every one of them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import redis
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from inference.contracts import HANDED_BACK_TOTAL_KEY, SHED_TOTAL_KEY

logger = logging.getLogger(__name__)

# Celery's Redis transport keeps a queue as a Redis list named after it; messages sent with a
# priority go to sibling lists "<queue>\x06\x16<step>" (kombu's PRIORITY_STEPS 3, 6, 9).
INFERENCE_QUEUE = "inference"
KOMBU_PRIORITY_SEPARATOR = "\x06\x16"
KOMBU_PRIORITY_STEPS = (3, 6, 9)
# Hash the inference worker writes after each engine step (fields below); see inference/.
INFERENCE_STATS_KEY = "inference:stats"
# A scrape must stay fast even when Redis is slow or gone: give up on it after this long.
REDIS_SCRAPE_TIMEOUT_S = 0.5

# Buckets around the 300 ms first-token SLA and the ~30 ms cache-hit target: fine below 0.5 s,
# coarse above it, where only "how bad" matters.
LATENCY_BUCKETS_S = (
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.1,
    0.2,
    0.3,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
)

# Answer sources, the same words as conversations.Message.Source (kept as plain strings so this
# module needs no Django import). Unknown words are recorded as "other" to bound label values.
ANSWER_SOURCES = frozenset({"faq", "cache", "llm", "fallback", "agent"})
CACHE_TIERS = frozenset({"exact", "semantic"})
_OTHER = "other"


def _bounded(value: str | None, allowed: frozenset[str]) -> str:
    """A label value from a known set: free text in a label would grow series without bound."""
    return value if value in allowed else _OTHER


# --- metrics recorded by the web process -----------------------------------------------------

WEBSOCKET_CONNECTIONS = Gauge(
    "chat_websocket_connections", "Websocket connections currently open on this process."
)
WEBSOCKET_CONNECTIONS_OPENED = Counter(
    "chat_websocket_connections_opened", "Websocket connections accepted."
)
MESSAGES_ANSWERED = Counter(
    "chat_messages_answered", "Answers sent to customers, by source.", ["source"]
)
TIME_TO_FIRST_TOKEN = Histogram(
    "chat_time_to_first_token_seconds",
    "Customer message arrival to first answer text sent, by answer source.",
    ["source"],
    buckets=LATENCY_BUCKETS_S,
)
ANSWER_TOTAL_TIME = Histogram(
    "chat_answer_total_seconds",
    "Customer message arrival to answer complete, by answer source.",
    ["source"],
    buckets=LATENCY_BUCKETS_S,
)
SLA_CHECKED = Counter(
    "chat_sla_checked", "Answers whose first-token SLA was evaluated, by source.", ["source"]
)
SLA_MISSES = Counter(
    "chat_sla_misses", "Answers whose first text missed the site's SLA, by source.", ["source"]
)
CACHE_LOOKUPS = Counter("cache_lookups", "Semantic cache lookups.")
CACHE_HITS = Counter("cache_hits", "Semantic cache hits, by tier (exact or semantic).", ["tier"])
REJECTED = Counter(
    "chat_rejected", "Customer messages or connections refused, by error code.", ["code"]
)
SUGGESTION_POLICIES = frozenset({"model_with_suggestions", "suggest_first"})
SUGGESTIONS_SHOWN = Counter(
    "chat_suggestions_shown",
    "Missed questions shown 'did you mean' FAQ suggestions, by the site's policy.",
    ["policy"],
)
SUGGESTIONS_CHOSEN = Counter(
    "chat_suggestions_chosen", "Suggestions clicked: the question answered from the FAQ."
)
SUGGESTIONS_DECLINED = Counter("chat_suggestions_declined", "'None of these' said to suggestions.")
GENERATIONS_CANCELLED_BY_CHOICE = Counter(
    "chat_generations_cancelled_by_choice",
    "Model generations stopped (or never started) because a suggestion was chosen.",
)
# Written by the CPU worker's finalize task (it knows what a cancelled generation used), read
# from Redis at scrape time like the inference figures.
GPU_SECONDS_SAVED_KEY = "metrics:suggestions:gpu_seconds_saved"


def connection_opened() -> None:
    WEBSOCKET_CONNECTIONS.inc()
    WEBSOCKET_CONNECTIONS_OPENED.inc()


def connection_closed() -> None:
    WEBSOCKET_CONNECTIONS.dec()


def message_answered(
    source: str, ttft_ms: float | None, total_ms: float, sla_met: bool | None
) -> None:
    """Record one answer sent to a customer.

    `source` is a Message.Source value; `ttft_ms` is None when no text was sent before the end
    (it is then not observed); `sla_met` None means the SLA was not evaluated for this answer.
    """
    label = _bounded(source, ANSWER_SOURCES)
    MESSAGES_ANSWERED.labels(source=label).inc()
    if ttft_ms is not None:
        TIME_TO_FIRST_TOKEN.labels(source=label).observe(ttft_ms / 1000.0)
    ANSWER_TOTAL_TIME.labels(source=label).observe(total_ms / 1000.0)
    if sla_met is not None:
        SLA_CHECKED.labels(source=label).inc()
        if not sla_met:
            SLA_MISSES.labels(source=label).inc()


def cache_lookup(tier: str | None, hit: bool) -> None:
    """Record one cache lookup; `tier` is the hit's tier ("exact" | "semantic"), None on a miss."""
    CACHE_LOOKUPS.inc()
    if hit:
        CACHE_HITS.labels(tier=_bounded(tier, CACHE_TIERS)).inc()


def suggestions_shown(policy: str) -> None:
    SUGGESTIONS_SHOWN.labels(policy=_bounded(policy, SUGGESTION_POLICIES)).inc()


def suggestion_chosen(cancelled_generation: bool) -> None:
    SUGGESTIONS_CHOSEN.inc()
    if cancelled_generation:
        GENERATIONS_CANCELLED_BY_CHOICE.inc()


def suggestions_declined() -> None:
    SUGGESTIONS_DECLINED.inc()


def rejected(code: str) -> None:
    """Record a refusal sent to a customer with its stable error code (a small, fixed set)."""
    REJECTED.labels(code=code).inc()


# --- inference figures, read from Redis at scrape time -----------------------------------------


def inference_queue_keys(queue: str = INFERENCE_QUEUE) -> list[str]:
    """The Redis lists that hold a Celery queue's waiting messages (plain + priority siblings)."""
    return [queue, *(f"{queue}{KOMBU_PRIORITY_SEPARATOR}{step}" for step in KOMBU_PRIORITY_STEPS)]


class InferenceCollector(Collector):
    """Reads the inference queue depth and the workers' latest engine figures from Redis.

    `inference_redis_up` is 0 when Redis could not be read, so a broken scrape is visible
    instead of silently reporting an empty queue.
    """

    def __init__(self, redis_url: str) -> None:
        self._client = redis.Redis.from_url(
            redis_url,
            socket_timeout=REDIS_SCRAPE_TIMEOUT_S,
            socket_connect_timeout=REDIS_SCRAPE_TIMEOUT_S,
        )

    def describe(self) -> list:
        # Describing without collecting keeps registration from touching Redis.
        return []

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        up = GaugeMetricFamily("inference_redis_up", "1 if Redis was readable at this scrape.")
        try:
            pipe = self._client.pipeline(transaction=False)
            for key in inference_queue_keys():
                pipe.llen(key)
            pipe.hgetall(INFERENCE_STATS_KEY)
            pipe.get(GPU_SECONDS_SAVED_KEY)
            pipe.get(SHED_TOTAL_KEY)
            pipe.get(HANDED_BACK_TOTAL_KEY)
            *lengths, stats, saved, shed, handed_back = pipe.execute()
        except redis.RedisError as error:
            logger.warning("metrics: cannot read inference figures from Redis: %s", error)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily(
            "inference_queue_depth",
            "Inference requests waiting in the Celery queue.",
            value=sum(lengths),
        )
        yield from _stats_metrics({k.decode(): v.decode() for k, v in stats.items()})
        yield CounterMetricFamily(
            "chat_gpu_seconds_saved_by_choice",
            "Estimated GPU seconds saved by generations a chosen suggestion cut short.",
            value=_float_or_none(saved.decode() if saved else None) or 0.0,
        )
        yield CounterMetricFamily(
            "inference_requests_shed",
            "Requests inference workers refused as overloaded (would start past "
            "INFERENCE_SHED_AFTER_S, or the engine's waiting line was full).",
            value=_float_or_none(shed.decode() if shed else None) or 0.0,
        )
        yield CounterMetricFamily(
            "inference_requests_handed_back",
            "Requests a worker could not start before their deadline and put back on the "
            "queue for an idle worker (once per request).",
            value=_float_or_none(handed_back.decode() if handed_back else None) or 0.0,
        )


def _stats_metrics(stats: dict[str, str]) -> Iterator[GaugeMetricFamily]:
    """Gauges from the `inference:stats` hash; a field a worker has not written is omitted."""
    figures = {
        "batch_size": ("inference_batch_size", "Requests in the engine's last decode step."),
        "tokens_per_s": ("inference_tokens_per_second", "Tokens generated per second, recently."),
    }
    for field, (name, help_text) in figures.items():
        value = _float_or_none(stats.get(field))
        if value is not None:
            yield GaugeMetricFamily(name, help_text, value=value)
    updated_at = _float_or_none(stats.get("updated_at"))
    if updated_at is not None:
        yield GaugeMetricFamily(
            "inference_stats_age_seconds",
            "Seconds since a worker last updated these figures (stale figures = idle or down).",
            value=max(0.0, time.time() - updated_at),
        )


def _float_or_none(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        logger.warning("metrics: non-numeric inference stat %r", raw)
        return None


_inference_collector: InferenceCollector | None = None
_inference_collector_url: str | None = None


def register_inference_collector(
    redis_url: str, registry: CollectorRegistry = REGISTRY
) -> InferenceCollector:
    """Register (once per process and URL) the collector that reads inference figures.

    Called on every scrape with the configured URL; a changed URL (settings overridden in
    tests) replaces the collector rather than keep reading the old server.
    """
    global _inference_collector, _inference_collector_url
    if _inference_collector is not None and _inference_collector_url != redis_url:
        registry.unregister(_inference_collector)
        _inference_collector = None
    if _inference_collector is None:
        _inference_collector = InferenceCollector(redis_url)
        _inference_collector_url = redis_url
        registry.register(_inference_collector)
    return _inference_collector
