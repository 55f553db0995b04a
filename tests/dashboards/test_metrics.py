"""/metrics: who may read it, and that it reports what the chat path and the workers record."""

from __future__ import annotations

import json
import time

import pytest
from django.test import Client
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from chatplatform import metrics
from embedded_redis import free_port
from inference.contracts import HANDED_BACK_TOTAL_KEY, SHED_TOTAL_KEY

pytestmark = pytest.mark.django_db


def scrape(client: Client, **headers: str) -> dict[tuple[str, tuple], float]:
    """GET /metrics and parse it into {(sample name, sorted labels): value}."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_address_outside_allow_list_gets_403_with_code(client: Client, settings) -> None:
    # given
    settings.METRICS_ALLOWED_IPS = ["10.0.0.7"]
    # when
    response = client.get("/metrics")  # the test client comes from 127.0.0.1
    # then
    assert response.status_code == 403
    assert json.loads(response.content)["code"] == "metrics_address_not_allowed"
    assert b"chat_" not in response.content


def test_empty_allow_list_serves_everyone(client: Client, settings) -> None:
    settings.METRICS_ALLOWED_IPS = []
    response = client.get("/metrics", REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 200


def test_token_is_required_when_set(client: Client, settings) -> None:
    # given
    settings.METRICS_ALLOWED_IPS = []
    settings.METRICS_BEARER_TOKEN = "s3cret"
    # when / then
    missing = client.get("/metrics")
    wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    right = client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    assert missing.status_code == 403
    assert json.loads(missing.content)["code"] == "metrics_token_invalid"
    assert wrong.status_code == 403
    assert right.status_code == 200
    assert b"chat_websocket_connections" in right.content


def test_chat_path_helpers_show_up_in_the_scrape(client: Client, settings) -> None:
    # given: counters are process-wide, so compare before and after
    settings.METRICS_ALLOWED_IPS = ["127.0.0.1"]
    before = scrape(client)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    # when
    metrics.connection_opened()
    metrics.connection_opened()
    metrics.connection_closed()
    metrics.message_answered("faq", ttft_ms=12.0, total_ms=12.0, sla_met=True)
    metrics.message_answered("llm", ttft_ms=450.0, total_ms=2_000.0, sla_met=False)
    metrics.message_answered("weird-source", ttft_ms=None, total_ms=5.0, sla_met=None)
    metrics.cache_lookup("exact", hit=True)
    metrics.cache_lookup("semantic", hit=True)
    metrics.cache_lookup(None, hit=False)
    metrics.rejected("rate_limited")
    after = scrape(client)

    # then
    assert delta("chat_websocket_connections") == 1
    assert delta("chat_websocket_connections_opened_total") == 2
    assert delta("chat_messages_answered_total", source="faq") == 1
    assert delta("chat_messages_answered_total", source="llm") == 1
    assert delta("chat_messages_answered_total", source="other") == 1
    # 12 ms lands in the 20 ms bucket, 450 ms does not land in the 300 ms bucket.
    assert delta("chat_time_to_first_token_seconds_bucket", source="faq", le="0.02") == 1
    assert delta("chat_time_to_first_token_seconds_bucket", source="llm", le="0.3") == 0
    assert delta("chat_time_to_first_token_seconds_bucket", source="llm", le="0.5") == 1
    assert delta("chat_time_to_first_token_seconds_count", source="other") == 0
    assert delta("chat_answer_total_seconds_sum", source="llm") == pytest.approx(2.0)
    assert delta("chat_sla_checked_total", source="llm") == 1
    assert delta("chat_sla_misses_total", source="llm") == 1
    assert delta("chat_sla_misses_total", source="faq") == 0
    assert delta("cache_lookups_total") == 3
    assert delta("cache_hits_total", tier="exact") == 1
    assert delta("cache_hits_total", tier="semantic") == 1
    assert delta("chat_rejected_total", code="rate_limited") == 1


def test_inference_figures_are_read_from_redis_at_scrape_time(
    client: Client, settings, redis_url: str, redis_client
) -> None:
    # given: three queued tasks (one with a priority) and a worker's latest figures
    settings.METRICS_ALLOWED_IPS = []
    settings.REDIS_URL = redis_url
    redis_client.rpush("inference", "task-1", "task-2")
    redis_client.rpush("inference\x06\x166", "task-3")
    redis_client.hset(
        "inference:stats",
        mapping={"batch_size": "8", "tokens_per_s": "512.5", "updated_at": str(time.time() - 2)},
    )
    # when
    samples = scrape(client)
    # then
    assert samples[("inference_redis_up", ())] == 1
    assert samples[("inference_queue_depth", ())] == 3
    assert samples[("inference_batch_size", ())] == 8
    assert samples[("inference_tokens_per_second", ())] == 512.5
    assert 1.5 < samples[("inference_stats_age_seconds", ())] < 30


def test_unreachable_redis_is_reported_not_hidden() -> None:
    # given: a port nothing listens on
    collector = metrics.InferenceCollector(f"redis://127.0.0.1:{free_port()}/0")
    registry = CollectorRegistry()
    registry.register(collector)
    # then: "up" says 0 and no made-up queue depth is reported
    assert registry.get_sample_value("inference_redis_up") == 0
    assert registry.get_sample_value("inference_queue_depth") is None


def test_worker_overload_counters_are_read_from_redis(
    client: Client, settings, redis_url: str, redis_client
) -> None:
    # given no overload so far: the counters are there, at zero
    settings.METRICS_ALLOWED_IPS = []
    settings.REDIS_URL = redis_url
    redis_client.delete(SHED_TOTAL_KEY, HANDED_BACK_TOTAL_KEY)
    samples = scrape(client)
    assert samples[("inference_requests_shed_total", ())] == 0
    assert samples[("inference_requests_handed_back_total", ())] == 0
    # when workers shed three requests and hand one back (inference/service.py's INCRs)
    for _ in range(3):
        redis_client.incr(SHED_TOTAL_KEY)
    redis_client.incr(HANDED_BACK_TOTAL_KEY)
    # then the scrape reports them as counters
    samples = scrape(client)
    assert samples[("inference_requests_shed_total", ())] == 3
    assert samples[("inference_requests_handed_back_total", ())] == 1
