"""The dashboard's did-you-mean table and its Prometheus counters: exact figures from known
suggestion records, one site's never in another's, and the counters the chat records."""

from __future__ import annotations

import csv
import io

import redis as redis_lib
from django.contrib.auth.models import User
from django.test import Client

from chatplatform import metrics
from chatplatform.suggestions.models import SuggestionOffer
from tests.dashboards.conftest import DAY1, DAY2, RANGE, KnownData
from tests.dashboards.factories import conversation, question
from tests.dashboards.test_metrics import scrape


def offer(site, day, outcome: str, policy: str = "model_with_suggestions", **fields) -> None:
    chat = conversation(site, day)
    asked = question(chat, f"question {outcome} {day:%d}", day)
    SuggestionOffer.objects.create(
        question=asked,
        site=site,
        conversation=chat,
        received_at=day,
        policy=policy,
        faqs=[{"faq_id": 1, "question": "q"}],
        outcome=outcome,
        **fields,
    )


def test_the_dashboard_counts_suggestions_clicks_and_gpu_saved(
    client: Client, superuser: User, known_data: KnownData, settings
) -> None:
    # given four suggestion sets on Shop (two clicks, one cancelling a generation that would
    # have cost 1.5 GPU seconds more) and one on Other
    settings.GPU_COST_PER_HOUR = 3.6
    shop, other = known_data.shop, known_data.other
    offer(shop, DAY1, "chosen", model_cancelled=True, gpu_seconds_saved=1.5)
    offer(shop, DAY1, "chosen")
    offer(shop, DAY2, "declined", policy="suggest_first")
    offer(shop, DAY2, "shown")
    offer(other, DAY1, "chosen", model_cancelled=True, gpu_seconds_saved=9.0)
    client.force_login(superuser)
    # when Shop's figures are exported
    response = client.get("/dashboard/export/suggestions.csv", {**RANGE, "site": shop.pk})
    rows = dict(csv.reader(io.StringIO(response.content.decode())))
    # then
    assert rows["questions shown suggestions"] == "4"
    assert rows["of which the model waited (suggest_first)"] == "1"
    assert rows["answered by a click"] == "2"
    assert float(rows["click rate"]) == 0.5
    assert rows['"none of these"'] == "1"
    assert rows["model generations cancelled by a click"] == "1"
    assert float(rows["GPU seconds saved by clicks"]) == 1.5
    assert float(rows["GPU cost saved by clicks"]) == 0.0015  # 1.5 s at $3.60 an hour
    page = client.get("/dashboard/", {**RANGE, "site": shop.pk})
    assert b"Did you mean" in page.content


def test_prometheus_counts_suggestions_and_reads_gpu_saved_from_redis(
    client: Client, redis_url: str, settings
) -> None:
    # given
    settings.METRICS_ALLOWED_IPS = []
    settings.REDIS_URL = redis_url
    redis_lib.Redis.from_url(redis_url).set(metrics.GPU_SECONDS_SAVED_KEY, "2.5")
    before = scrape(client)
    # when the chat records suggestions shown, a click that cancelled a generation, a decline
    metrics.suggestions_shown("suggest_first")
    metrics.suggestion_chosen(cancelled_generation=True)
    metrics.suggestions_declined()
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    # then
    assert delta("chat_suggestions_shown_total", policy="suggest_first") == 1
    assert delta("chat_suggestions_chosen_total") == 1
    assert delta("chat_suggestions_declined_total") == 1
    assert delta("chat_generations_cancelled_by_choice_total") == 1
    assert after[("chat_gpu_seconds_saved_by_choice_total", ())] == 2.5
