"""The dashboard's aggregates, computed from the per-message records.

Every figure comes from a few grouped queries over `Message` and `Conversation` filtered by
site and date range (covering indexes: conversations/migrations/0002), assembled in Python into
`Table`s, which the page renders, the charts plot and the CSV export writes. For settled days
the grouped rows are read from stored rollups instead (rollups.py; report.py combines both).
Definitions:

* answer: an assistant or human-agent message; its `source` says where it came from.
* cache hit: an answer with source `faq` or `cache`.
* missed question: a customer message answered by the model or a holding reply (an answer with
  source `llm` or `fallback` replying to it); counted once even when it got both.
* cache hit rate: hits / (hits + missed questions).
* SLA compliance: one outcome per customer question, as the customer saw it: met when the
  first answer text reached them within the site's SLA (a cache or FAQ answer, the model's
  first token, or a holding reply: the chat layer's "first text within SLA"), i.e. when some
  answer to it has `sla_met` true; every other question is missed, including one that never
  got any answer (a model failure, a timeout). A question still being answered counts as
  missed until its answer is recorded. The per-source table keeps a per-answer figure: the
  share of that source's answers whose first text came within the SLA.
* satisfaction: thumbs up / (thumbs up + thumbs down), over answers with feedback.
* percentiles: nearest rank (the smallest value with at least p% of values at or below it).
* cost saved: hits x (model GPU-seconds / model answers generated) x GPU cost per
  hour / 3600; refused or failed model answers that used no GPU time do not dilute it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Count, DateField, Func, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.db.models.sql.compiler import SQLCompiler

from chatplatform.conversations.models import Conversation, Message

Source = Message.Source
HIT_SOURCES = (Source.FAQ, Source.CACHE)
MISS_SOURCES = (Source.LLM, Source.FALLBACK)
ANSWER_ROLES = (Message.Role.ASSISTANT, Message.Role.AGENT)
# Sources in the order the page shows them (the answer source mix).
SOURCE_ORDER = [Source.FAQ, Source.CACHE, Source.LLM, Source.FALLBACK, Source.AGENT]
PERCENTILES = (50, 95, 99)
# Columns holding a ratio in [0, 1]: the page shows them as percentages, CSV as raw numbers.
RATIO_COLUMNS = frozenset(
    {"cache hit rate", "SLA compliance", "share", "satisfaction", "rated 4-5"}
)


@dataclass(frozen=True)
class Scope:
    """What a dashboard view covers: sites already checked against the user's access, and the
    half-open time range [start, end)."""

    site_ids: list[int]
    start: datetime
    end: datetime

    def days(self) -> list[date]:
        first, last = self.start.date(), (self.end - timedelta(microseconds=1)).date()
        return [first + timedelta(days=n) for n in range((last - first).days + 1)]


@dataclass
class Table:
    """One table of the page: rendered as HTML, plotted, and exported as CSV."""

    name: str  # stable id, used in URLs: /dashboard/export/<name>.csv
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)


class UTCDate(TruncDate):
    """The UTC calendar day of a datetime column (the dashboard's days are UTC days).

    On SQLite, Django's TruncDate calls a Python function per row; datetimes are stored there as
    UTC text "YYYY-MM-DD HH:MM:SS[.ffffff]", so the day is simply the first 10 characters,
    which SQLite computes natively (the grouped query ran ~2x faster on 100k messages).
    """

    output_field = DateField()

    def as_sqlite(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra: Any
    ) -> tuple[str, list[Any]]:
        return Func.as_sql(
            self, compiler, connection, template="substr(%(expressions)s, 1, 10)", **extra
        )


def messages_in(scope: Scope) -> QuerySet[Message]:
    return Message.objects.filter(
        site_id__in=scope.site_ids, received_at__gte=scope.start, received_at__lt=scope.end
    )


def ratio(part: float, whole: float) -> float | None:
    """part / whole, or None when there is nothing to divide (shown as "-", not as 0%)."""
    return part / whole if whole else None


# --- the grouped queries ------------------------------------------------------------------------


def message_groups(scope: Scope, by_site: bool = False) -> list[dict[str, Any]]:
    """One row per (day, role, source) [and site] with counts and sums: feeds most tables."""
    keys = ["day", "role", "source"] + (["site_id"] if by_site else [])
    return list(
        messages_in(scope)
        .annotate(day=UTCDate("received_at", tzinfo=UTC))
        .values(*keys)
        .annotate(
            n=Count("id"),
            sla_checked=Count("id", filter=Q(sla_met__isnull=False)),
            sla_met=Count("id", filter=Q(sla_met=True)),
            thumbs_up=Count("id", filter=Q(feedback=1)),
            thumbs_down=Count("id", filter=Q(feedback=-1)),
            gpu_answers=Count("id", filter=Q(gpu_seconds__gt=0)),
            gpu_seconds=Sum("gpu_seconds"),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
        )
        .order_by()
    )


def question_outcomes_by_day(scope: Scope, by_site: bool = False) -> list[dict[str, Any]]:
    """Per day [and site]: questions missed by the cache and questions answered within the SLA.

    Rows {day, [site_id,] missed, sla_met}, counted over the answers' `in_reply_to`, so a
    question with several answers (a holding reply and the model's) counts once. Additive over
    days and sites: a question and its answers share `received_at` (the question's arrival),
    so a question is never counted on two days.
    """
    keys = ["day"] + (["site_id"] if by_site else [])
    return list(
        messages_in(scope)
        .filter(role__in=ANSWER_ROLES, in_reply_to__isnull=False)
        .annotate(day=UTCDate("received_at", tzinfo=UTC))
        .values(*keys)
        .annotate(
            missed=Count(
                "in_reply_to",
                distinct=True,
                filter=Q(role=Message.Role.ASSISTANT, source__in=MISS_SOURCES),
            ),
            sla_met=Count("in_reply_to", distinct=True, filter=Q(sla_met=True)),
        )
        .order_by()
    )


def conversations_by_day(scope: Scope, by_site: bool = False) -> list[dict[str, Any]]:
    """Conversations started and handoff requests per day [and site]."""
    keys = ["day"] + (["site_id"] if by_site else [])
    return list(
        Conversation.objects.filter(
            site_id__in=scope.site_ids, started_at__gte=scope.start, started_at__lt=scope.end
        )
        .annotate(day=UTCDate("started_at", tzinfo=UTC))
        .values(*keys)
        .annotate(
            conversations=Count("id"),
            handoffs=Count("id", filter=Q(handoff_requested_at__isnull=False)),
        )
        .order_by()
    )


def latency_values(scope: Scope) -> dict[str, tuple[list[float], list[float]]]:
    """Per source: sorted TTFT values and sorted total-time values (ms) of the answers.

    Percentiles need every value; fetching two floats per answer from the covering index and
    sorting in Python measured 4x faster than ranking with window functions in SQLite.
    """
    ttft: dict[str, list[float]] = defaultdict(list)
    total: dict[str, list[float]] = defaultdict(list)
    rows = (
        messages_in(scope)
        .filter(role__in=ANSWER_ROLES)
        .values_list("source", "ttft_ms", "total_ms")
        .order_by()
    )
    for source, ttft_ms, total_ms in rows:
        if ttft_ms is not None:
            ttft[source].append(ttft_ms)
        if total_ms is not None:
            total[source].append(total_ms)
    return {s: (sorted(ttft[s]), sorted(total[s])) for s in set(ttft) | set(total)}


def nearest_rank(sorted_values: Sequence[float], p: int) -> float | None:
    """The smallest value with at least p% of the values at or below it (None if no values)."""
    if len(sorted_values) == 0:
        return None
    return float(sorted_values[(len(sorted_values) * p + 99) // 100 - 1])


# --- tables --------------------------------------------------------------------------------------


def daily_table(
    scope: Scope,
    groups: list[dict[str, Any]],
    questions: dict[date, dict[str, int]],
    conversations: dict[date, dict[str, int]],
) -> Table:
    """Day by day. `questions` is question_outcomes_by_day summed per day ({missed, sla_met});
    "SLA evaluated" is every customer question of the day (see the definitions above)."""
    table = Table(
        "daily",
        "Day by day",
        [
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
        ],
    )
    per_day: dict[date, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in groups:
        day = per_day[row["day"]]
        if row["role"] == Message.Role.CUSTOMER:
            day["customer"] += row["n"]
            continue
        day["answers"] += row["n"]
        day["hits"] += row["n"] if row["source"] in HIT_SOURCES else 0
    for day in scope.days():
        figures = per_day.get(day, {})
        outcomes = questions.get(day, {})
        hits, misses = figures.get("hits", 0), outcomes.get("missed", 0)
        checked, met = figures.get("customer", 0), outcomes.get("sla_met", 0)
        conv = conversations.get(day, {})
        table.rows.append(
            [
                day.isoformat(),
                conv.get("conversations", 0),
                figures.get("customer", 0),
                figures.get("answers", 0),
                hits,
                misses,
                ratio(hits, hits + misses),
                checked,
                met,
                ratio(met, checked),
                conv.get("handoffs", 0),
            ]
        )
    return table


def source_mix_table(scope: Scope, groups: list[dict[str, Any]]) -> Table:
    """Answers per day per source: the stacked "answer source mix" chart."""
    table = Table("source_mix", "Answer source mix by day", ["day", *SOURCE_ORDER])
    counts: dict[tuple[date, str], int] = defaultdict(int)
    for row in groups:
        if row["role"] in ANSWER_ROLES:
            counts[(row["day"], row["source"])] += row["n"]
    for day in scope.days():
        table.rows.append([day.isoformat(), *(counts[(day, s)] for s in SOURCE_ORDER)])
    return table


def sources_table(groups: list[dict[str, Any]]) -> Table:
    """Per source: answers, share, satisfaction and SLA compliance over the whole range."""
    table = Table(
        "sources",
        "By answer source: volume, satisfaction, SLA",
        [
            "source",
            "answers",
            "share",
            "thumbs up",
            "thumbs down",
            "satisfaction",
            "SLA compliance",
        ],
    )
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in groups:
        if row["role"] in ANSWER_ROLES:
            for key in ("n", "thumbs_up", "thumbs_down", "sla_checked", "sla_met"):
                totals[row["source"]][key] += row[key]
    all_answers = sum(t["n"] for t in totals.values())
    for source in SOURCE_ORDER:
        t = totals.get(source, {})
        up, down = t.get("thumbs_up", 0), t.get("thumbs_down", 0)
        table.rows.append(
            [
                source.value,
                t.get("n", 0),
                ratio(t.get("n", 0), all_answers),
                up,
                down,
                ratio(up, up + down),
                ratio(t.get("sla_met", 0), t.get("sla_checked", 0)),
            ]
        )
    return table


def latency_table(values: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> Table:
    columns = ["source", "answers timed"]
    columns += [f"TTFT p{p} ms" for p in PERCENTILES] + [f"total p{p} ms" for p in PERCENTILES]
    table = Table("latency", "Latency by answer source", columns)
    for source in SOURCE_ORDER:
        ttft, total = values.get(source, ([], []))
        table.rows.append(
            [
                source.value,
                len(total),
                *(nearest_rank(ttft, p) for p in PERCENTILES),
                *(nearest_rank(total, p) for p in PERCENTILES),
            ]
        )
    return table


def cost_table(groups: list[dict[str, Any]], gpu_cost_per_hour: float) -> Table:
    table = Table("cost", "Model cost and what the cache saved", ["figure", "value"])
    model_answers = gpu_answers = hits = 0
    model_gpu = all_gpu = 0.0
    prompt_tokens = completion_tokens = 0
    for row in groups:
        if row["role"] == Message.Role.CUSTOMER:
            continue
        all_gpu += row["gpu_seconds"] or 0.0
        prompt_tokens += row["prompt_tokens"] or 0
        completion_tokens += row["completion_tokens"] or 0
        if row["source"] == Source.LLM:
            model_answers += row["n"]
            gpu_answers += row["gpu_answers"]
            model_gpu += row["gpu_seconds"] or 0.0
        elif row["source"] in HIT_SOURCES:
            hits += row["n"]
    # Only answers that ran on the model: a refused request or a failure before generation
    # used no GPU time and would make each answer look cheaper than it is.
    gpu_per_answer = ratio(model_gpu, gpu_answers)
    saved_gpu = hits * gpu_per_answer if gpu_per_answer is not None else None
    table.rows = [
        ["model answers", model_answers],
        # Not "on the GPU": the offline demo model generates on the CPU.
        ["model answers generated", gpu_answers],
        ["model GPU-seconds", all_gpu],
        ["prompt tokens", prompt_tokens],
        ["completion tokens", completion_tokens],
        ["GPU-seconds per model answer", gpu_per_answer],
        ["cache hits", hits],
        ["GPU cost per hour", gpu_cost_per_hour],
        ["model cost", all_gpu * gpu_cost_per_hour / 3600],
        ["GPU-seconds saved by the cache (estimate)", saved_gpu],
        [
            "cost saved by the cache (estimate)",
            saved_gpu * gpu_cost_per_hour / 3600 if saved_gpu is not None else None,
        ],
    ]
    return table
