"""Stored daily rollups: the dashboard's grouped figures of settled days, computed once.

Counting 66,000 messages for one site's month takes ~200 ms on 2 busy cores, and a year or
all sites take seconds; the same figures per (site, UTC day, role, source) are a few thousand
rows for any range. A day is *settled* once `SETTLE_DAYS` full days have passed (answers are
complete and customers have given their feedback): its rollup is computed on first need and
reused after. Recent days are always counted live from the messages. Everything stored is
additive (counts and sums), so a range's figures are sums of its days' rows and stay exact.
Late changes to a settled day (feedback given days later) are not seen until
`manage.py refresh_dashboard_rollups --rebuild` recomputes the range.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from chatplatform.dashboards.models import DailySiteRollup, DailySourceRollup
from chatplatform.dashboards.queries import (
    ANSWER_ROLES,
    Scope,
    conversations_by_day,
    message_groups,
    messages_in,
    question_outcomes_by_day,
)

# Answers finish within minutes and feedback comes while the chat is open: two full days of
# margin keep a day live until nothing more can reasonably change it.
SETTLE_DAYS = 2
SUMMED = [
    "n",
    "sla_checked",
    "sla_met",
    "thumbs_up",
    "thumbs_down",
    "gpu_answers",
    "gpu_seconds",
    "prompt_tokens",
    "completion_tokens",
]


VALUES_DTYPE = np.dtype("<f8")  # little-endian float64: the stored floats, bit for bit


def pack_values(values: list[float]) -> bytes:
    return np.sort(np.asarray(values, dtype=VALUES_DTYPE)).tobytes()


def unpack_values(blob: bytes | memoryview) -> np.ndarray:
    return np.frombuffer(bytes(blob), dtype=VALUES_DTYPE)


def midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def first_live_day(now: datetime | None = None) -> date:
    return (now or timezone.now()).astimezone(UTC).date() - timedelta(days=SETTLE_DAYS)


def split(scope: Scope, now: datetime | None = None) -> tuple[Scope | None, Scope | None]:
    """(settled part read from rollups, live part counted from messages); either may be None.

    Only whole UTC days can come from rollups: a range that starts or ends mid-day is live.
    """
    whole_days = all(t == midnight(t.astimezone(UTC).date()) for t in (scope.start, scope.end))
    if not whole_days:
        return None, scope
    boundary = midnight(first_live_day(now))
    settled_end = min(scope.end, boundary)
    live_start = max(scope.start, boundary)
    settled = Scope(scope.site_ids, scope.start, settled_end) if settled_end > scope.start else None
    live = Scope(scope.site_ids, live_start, scope.end) if scope.end > live_start else None
    return settled, live


def ensure(scope: Scope) -> int:
    """Compute and store the rollups of the scope's (site, day) pairs that have none yet;
    returns how many site-days were computed. Safe to run concurrently (same rows, conflicts
    ignored)."""
    days = scope.days()
    have = set(
        DailySiteRollup.objects.filter(
            site_id__in=scope.site_ids, day__gte=days[0], day__lte=days[-1]
        ).values_list("site_id", "day")
    )
    missing = {(s, d) for s in scope.site_ids for d in days} - have
    if not missing:
        return 0
    span = Scope(
        sorted({s for s, _ in missing}),
        midnight(min(d for _, d in missing)),
        midnight(max(d for _, d in missing) + timedelta(days=1)),
    )
    latencies = _latencies_by_site_day_source(span)
    source_rows = []
    for row in message_groups(span, by_site=True):
        key = (row["site_id"], row["day"], row["source"])
        if key[:2] in missing:
            ttft, total = latencies.get(key, ([], []))
            source_rows.append(
                DailySourceRollup(
                    **row, ttft_values=pack_values(ttft), total_values=pack_values(total)
                )
            )
    per_day: dict[tuple[int, date], dict[str, int]] = defaultdict(dict)
    for row in question_outcomes_by_day(span, by_site=True):
        per_day[(row["site_id"], row["day"])].update(
            missed_questions=row["missed"], questions_sla_met=row["sla_met"]
        )
    for row in conversations_by_day(span, by_site=True):
        key = (row["site_id"], row["day"])
        per_day[key].update(conversations=row["conversations"], handoffs=row["handoffs"])
    site_rows = [
        DailySiteRollup(
            site_id=site_id,
            day=day,
            conversations=per_day[(site_id, day)].get("conversations", 0),
            handoffs=per_day[(site_id, day)].get("handoffs", 0),
            missed_questions=per_day[(site_id, day)].get("missed_questions", 0),
            questions_sla_met=per_day[(site_id, day)].get("questions_sla_met", 0),
        )
        for site_id, day in missing
    ]
    with transaction.atomic():
        DailySourceRollup.objects.bulk_create(source_rows, ignore_conflicts=True, batch_size=500)
        # Written last: its presence says the day's source rows are complete.
        DailySiteRollup.objects.bulk_create(site_rows, ignore_conflicts=True, batch_size=500)
    return len(missing)


def _latencies_by_site_day_source(
    scope: Scope,
) -> dict[tuple[int, date, str], tuple[list[float], list[float]]]:
    """Every answer's (ttft, total) in the scope, grouped by (site, UTC day, source)."""
    values: dict[tuple[int, date, str], tuple[list[float], list[float]]] = defaultdict(
        lambda: ([], [])
    )
    rows = (
        messages_in(scope)
        .filter(role__in=ANSWER_ROLES)
        .values_list("site_id", "received_at", "source", "ttft_ms", "total_ms")
        .order_by()
    )
    for site_id, received_at, source, ttft_ms, total_ms in rows:
        ttft, total = values[(site_id, received_at.astimezone(UTC).date(), source)]
        if ttft_ms is not None:
            ttft.append(ttft_ms)
        if total_ms is not None:
            total.append(total_ms)
    return values


def stored_latencies(scope: Scope) -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    """Per source: the stored (ttft, total) value arrays of the scope's settled days."""
    ensure(scope)
    days = scope.days()
    rows = DailySourceRollup.objects.filter(
        site_id__in=scope.site_ids, day__gte=days[0], day__lte=days[-1], role__in=ANSWER_ROLES
    ).values_list("source", "ttft_values", "total_values")
    arrays: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = defaultdict(lambda: ([], []))
    for source, ttft, total in rows:
        arrays[source][0].append(unpack_values(ttft))
        arrays[source][1].append(unpack_values(total))
    return arrays


def stored_figures(
    scope: Scope,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """The scope's rollups summed over its sites, shaped like the live queries' rows:
    (message groups, question outcomes per day, conversations per day)."""
    ensure(scope)
    days = scope.days()
    in_range = {"site_id__in": scope.site_ids, "day__gte": days[0], "day__lte": days[-1]}
    groups = list(
        DailySourceRollup.objects.filter(**in_range)
        .values("day", "role", "source")
        .annotate(**{name: Sum(name) for name in SUMMED})
        .order_by()
    )
    site_days = (
        DailySiteRollup.objects.filter(**in_range)
        .values("day")
        .annotate(
            conversations=Sum("conversations"),
            handoffs=Sum("handoffs"),
            missed=Sum("missed_questions"),
            sla_met=Sum("questions_sla_met"),
        )
        .order_by()
    )
    questions = [
        {"day": row["day"], "missed": row["missed"], "sla_met": row["sla_met"]} for row in site_days
    ]
    conversations = [
        {"day": r["day"], "conversations": r["conversations"], "handoffs": r["handoffs"]}
        for r in site_days
    ]
    return groups, questions, conversations


def rebuild(scope: Scope) -> int:
    """Drop and recompute the scope's settled rollups (after late edits to old messages)."""
    settled, _ = split(scope)
    if settled is None:
        return 0
    days = settled.days()
    in_range = {"site_id__in": settled.site_ids, "day__gte": days[0], "day__lte": days[-1]}
    with transaction.atomic():
        DailySiteRollup.objects.filter(**in_range).delete()
        DailySourceRollup.objects.filter(**in_range).delete()
    return ensure(settled)
