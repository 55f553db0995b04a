"""Every dashboard aggregate against known data (see conftest.known_data), exact numbers."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime

import pytest
from django.core.management import call_command

from chatplatform.conversations.models import Message
from chatplatform.dashboards import rollups
from chatplatform.dashboards.models import DailySiteRollup
from chatplatform.dashboards.queries import Scope, latency_values, nearest_rank
from chatplatform.dashboards.report import Dashboard, build_dashboard
from chatplatform.tenants.models import Site
from tests.dashboards.conftest import DAY1, KnownData
from tests.dashboards.factories import answer, conversation, question

GPU_COST_PER_HOUR = 3.6  # makes cost = GPU-seconds / 1000


def shop_dashboard(data: KnownData) -> Dashboard:
    scope = Scope(
        site_ids=[data.shop.pk],
        start=datetime(2026, 3, 2, tzinfo=UTC),
        end=datetime(2026, 3, 4, tzinfo=UTC),
    )
    return build_dashboard(scope, GPU_COST_PER_HOUR)


def as_dict(rows: list[list]) -> dict:
    return {row[0]: row[1:] for row in rows}


def test_daily_volume_hit_rate_sla_and_handoffs(known_data: KnownData) -> None:
    daily = shop_dashboard(known_data).daily
    assert daily.columns == [
        "day",
        "conversations",
        "customer messages",
        "answers",
        "cache hits",
        "missed questions",
        "cache hit rate",
        "SLA evaluated",
        "SLA met",
        "SLA compliance",
        "human requests",
    ]
    # day 1: q3 got a holding reply and a model answer: one missed question, not two; and one
    # SLA outcome: the holding reply was its first text, within the SLA, so it is met.
    assert daily.rows[0] == ["2026-03-02", 1, 3, 4, 2, 1, pytest.approx(2 / 3), 3, 3, 1.0, 1]
    assert daily.rows[1] == ["2026-03-03", 1, 2, 3, 1, 1, 0.5, 2, 2, 1.0, 0]


def test_days_without_data_are_zero_rows_not_gaps(known_data: KnownData) -> None:
    scope = Scope(
        [known_data.shop.pk], datetime(2026, 3, 4, tzinfo=UTC), datetime(2026, 3, 6, tzinfo=UTC)
    )
    daily = build_dashboard(scope, GPU_COST_PER_HOUR).daily
    assert daily.rows == [
        ["2026-03-04", 0, 0, 0, 0, 0, None, 0, 0, None, 0],
        ["2026-03-05", 0, 0, 0, 0, 0, None, 0, 0, None, 0],
    ]


def test_source_mix_by_day(known_data: KnownData) -> None:
    mix = shop_dashboard(known_data).source_mix
    assert mix.columns == ["day", "faq", "cache", "llm", "fallback", "agent"]
    assert mix.rows == [["2026-03-02", 1, 1, 1, 1, 0], ["2026-03-03", 1, 0, 1, 0, 1]]


def test_sources_share_satisfaction_and_sla(known_data: KnownData) -> None:
    sources = as_dict(shop_dashboard(known_data).sources.rows)
    # answers, share, up, down, satisfaction, SLA compliance
    assert sources["faq"] == [2, 2 / 7, 1, 0, 1.0, 1.0]
    assert sources["cache"] == [1, 1 / 7, 0, 1, 0.0, 1.0]
    assert sources["llm"] == [2, 2 / 7, 1, 0, 1.0, 0.5]
    assert sources["fallback"] == [1, 1 / 7, 0, 0, None, 1.0]
    assert sources["agent"] == [1, 1 / 7, 0, 0, None, None]


def test_latency_percentiles_by_source(known_data: KnownData) -> None:
    latency = as_dict(shop_dashboard(known_data).latency.rows)
    # timed answers, TTFT p50/p95/p99, total p50/p95/p99
    assert latency["faq"] == [2, 5, 10, 10, 5, 10, 10]
    assert latency["cache"] == [1, 20, 20, 20, 20, 20, 20]
    assert latency["llm"] == [2, 200, 400, 400, 1000, 1400, 1400]
    assert latency["fallback"] == [1, 250, 250, 250, 250, 250, 250]
    assert latency["agent"] == [1, None, None, None, 60_000, 60_000, 60_000]


def test_cost_and_cache_savings(known_data: KnownData) -> None:
    cost = dict(shop_dashboard(known_data).cost.rows)
    assert cost["model answers"] == 2
    assert cost["model answers generated"] == 2
    assert cost["model GPU-seconds"] == 3.0  # the other site's 4.0 s are not counted
    assert cost["prompt tokens"] == 180
    assert cost["completion tokens"] == 90
    assert cost["GPU-seconds per model answer"] == 1.5
    assert cost["cache hits"] == 3
    assert cost["model cost"] == pytest.approx(0.003)
    # 3 hits x 1.5 GPU-s = 4.5 GPU-s; at 3.6 per hour = 0.0045
    assert cost["GPU-seconds saved by the cache (estimate)"] == 4.5
    assert cost["cost saved by the cache (estimate)"] == pytest.approx(0.0045)


def test_sla_compliance_is_one_outcome_per_question_and_unanswered_ones_are_missed(
    db,
) -> None:
    # given: four questions on a fresh site
    site = Site.objects.create(name="SLA")
    conv = conversation(site, DAY1)
    late = question(conv, "late holding reply, the answer never came", DAY1)
    answer(late, "fallback", ttft_ms=900, total_ms=900, sla_met=False)
    failed = question(conv, "the model failed, no holding reply", DAY1)
    answer(failed, "llm", ttft_ms=None, total_ms=None, sla_met=None, text="")
    question(conv, "never answered at all", DAY1)
    timely = question(conv, "holding reply in time, answer late", DAY1)
    answer(timely, "fallback", ttft_ms=250, total_ms=250, sla_met=True)
    answer(timely, "llm", ttft_ms=700, total_ms=2000, sla_met=False, gpu_seconds=1.0)
    scope = Scope([site.pk], datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
    # when: counted live and from rollups
    live = build_dashboard(scope, GPU_COST_PER_HOUR, now=BEFORE_MARCH).daily.rows[0]
    settled = build_dashboard(scope, GPU_COST_PER_HOUR).daily.rows[0]
    # then: 4 questions evaluated, only the one whose first text came in time is met (per
    # answer row it would have been 1 met of 3: the failure and the silence left out)
    assert live[7:10] == [4, 1, 0.25]
    assert settled == live


def test_gpu_seconds_per_answer_counts_only_answers_that_ran_on_the_model(db) -> None:
    # given: one model answer that used 3 GPU-seconds and one refused before generating
    site = Site.objects.create(name="Cost")
    conv = conversation(site, DAY1)
    answer(question(conv, "a", DAY1), "llm", ttft_ms=100, total_ms=900, sla_met=True, gpu_seconds=3)
    answer(question(conv, "b", DAY1), "llm", ttft_ms=None, total_ms=None, sla_met=None, text="")
    answer(question(conv, "c", DAY1), "faq", ttft_ms=5, total_ms=5, sla_met=True)
    scope = Scope([site.pk], datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
    for now in (BEFORE_MARCH, None):  # live, then from rollups
        cost = dict(build_dashboard(scope, GPU_COST_PER_HOUR, now=now).cost.rows)
        assert cost["model answers"] == 2
        assert cost["model answers generated"] == 1
        assert cost["GPU-seconds per model answer"] == 3.0
        assert cost["GPU-seconds saved by the cache (estimate)"] == 3.0


def test_all_sites_scope_adds_the_other_site(known_data: KnownData) -> None:
    scope = Scope(
        [known_data.shop.pk, known_data.other.pk],
        datetime(2026, 3, 2, tzinfo=UTC),
        datetime(2026, 3, 4, tzinfo=UTC),
    )
    daily = build_dashboard(scope, GPU_COST_PER_HOUR).daily
    assert daily.rows[0][1:6] == [2, 4, 5, 2, 2]


def reference_percentile(values: list[float], p: int) -> float:
    """Nearest rank, the textbook way: the smallest value with >= p% of values at or below."""
    ordered = sorted(values)
    return next(v for i, v in enumerate(ordered, 1) if i / len(ordered) >= p / 100)


@pytest.mark.parametrize("count", [1, 2, 3, 20, 101])
def test_nearest_rank_matches_the_definition(known_data: KnownData, count: int) -> None:
    # given: `count` model answers with shuffled TTFTs on a fresh site
    rng = random.Random(count)
    values = [round(rng.uniform(50, 900), 3) for _ in range(count)]
    site = Site.objects.create(name="Percentiles")
    conv = conversation(site, DAY1)
    for value in values:
        answer(question(conv, "q", DAY1), "llm", ttft_ms=value, total_ms=value, sla_met=True)
    scope = Scope([site.pk], datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
    # when
    ttft, _ = latency_values(scope)["llm"]
    # then
    for p in (50, 95, 99):
        assert nearest_rank(ttft, p) == reference_percentile(values, p)


MARCH = Scope([], datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 4, tzinfo=UTC))
BEFORE_MARCH = datetime(2026, 3, 1, tzinfo=UTC)  # as if today were 1 March: every day is live


def test_rollups_and_live_counting_give_the_same_tables(known_data: KnownData) -> None:
    scope = Scope([known_data.shop.pk, known_data.other.pk], MARCH.start, MARCH.end)
    live = build_dashboard(scope, GPU_COST_PER_HOUR, now=BEFORE_MARCH)
    assert not DailySiteRollup.objects.exists()
    settled = build_dashboard(scope, GPU_COST_PER_HOUR)  # today (November): settled days
    assert DailySiteRollup.objects.count() == 4  # 2 sites x 2 days
    for live_table, settled_table in zip(live.tables(), settled.tables(), strict=True):
        assert live_table.rows == settled_table.rows, live_table.name


def test_settled_days_are_read_from_rollups_until_rebuilt(known_data: KnownData) -> None:
    # given: day 1 rolled up, then its messages deleted
    scope = Scope([known_data.shop.pk], MARCH.start, MARCH.end)
    before = build_dashboard(scope, GPU_COST_PER_HOUR).daily.rows
    Message.objects.filter(received_at__lt=datetime(2026, 3, 3, tzinfo=UTC)).delete()
    # when / then: the stored figures still answer
    assert build_dashboard(scope, GPU_COST_PER_HOUR).daily.rows[0] == before[0]
    # when / then: a rebuild recounts from the messages
    assert rollups.rebuild(scope) == 2
    assert build_dashboard(scope, GPU_COST_PER_HOUR).daily.rows[0][2:6] == [0, 0, 0, 0]


def test_recent_days_are_counted_live_and_not_stored(known_data: KnownData) -> None:
    scope = Scope([known_data.shop.pk], MARCH.start, MARCH.end)
    # 5 March: day 2 (3 March) is within SETTLE_DAYS, day 1 is settled
    build_dashboard(scope, GPU_COST_PER_HOUR, now=datetime(2026, 3, 5, 12, tzinfo=UTC))
    stored_days = list(DailySiteRollup.objects.values_list("day", flat=True))
    assert [day.isoformat() for day in stored_days] == ["2026-03-02"]


def test_refresh_command_fills_settled_days(known_data: KnownData) -> None:
    out = io.StringIO()
    call_command("refresh_dashboard_rollups", "--days", "400", stdout=out)
    assert out.getvalue().strip() == "800 site-days computed"  # 2 sites x 400 days
    out = io.StringIO()
    call_command("refresh_dashboard_rollups", "--days", "400", stdout=out)
    assert out.getvalue().strip() == "0 site-days computed"
