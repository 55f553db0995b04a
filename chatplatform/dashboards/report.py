"""The whole overview page's figures for a scope: settled days from stored rollups, recent
days counted live from the messages, latency from the messages (percentiles need every
value)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np

from chatplatform.dashboards import handoffs, queries, rollups, suggestions
from chatplatform.dashboards.queries import Scope, Table


@dataclass
class Dashboard:
    daily: Table
    source_mix: Table
    sources: Table
    latency: Table
    cost: Table
    handoffs: Table
    rating_by_source: Table
    suggestions: Table

    def tables(self) -> list[Table]:
        return [
            self.daily,
            self.source_mix,
            self.sources,
            self.latency,
            self.cost,
            self.handoffs,
            self.rating_by_source,
            self.suggestions,
        ]


def daily_figures(
    scope: Scope, now: datetime | None = None
) -> tuple[list[dict[str, Any]], dict[date, dict[str, int]], dict[date, dict[str, int]]]:
    """(message groups, question outcomes per day {missed, sla_met}, conversations per day)
    over the scope."""
    settled, live = rollups.split(scope, now)
    groups: list[dict[str, Any]] = []
    question_rows: list[dict[str, Any]] = []
    conversation_rows: list[dict[str, Any]] = []
    if settled is not None:
        stored_groups, stored_questions, stored_conversations = rollups.stored_figures(settled)
        groups += stored_groups
        question_rows += stored_questions
        conversation_rows += stored_conversations
    if live is not None:
        groups += queries.message_groups(live)
        question_rows += queries.question_outcomes_by_day(live)
        conversation_rows += queries.conversations_by_day(live)
    questions: dict[date, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in question_rows:
        questions[row["day"]]["missed"] += row["missed"]
        questions[row["day"]]["sla_met"] += row["sla_met"]
    conversations: dict[date, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in conversation_rows:
        conversations[row["day"]]["conversations"] += row["conversations"]
        conversations[row["day"]]["handoffs"] += row["handoffs"]
    return groups, questions, conversations


def latency_values(
    scope: Scope, now: datetime | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per source: every answer's TTFT and total time in the scope, sorted (exact
    percentiles): settled days' values from the rollups, recent days' from the messages."""
    settled, live = rollups.split(scope, now)
    parts: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = defaultdict(lambda: ([], []))
    if settled is not None:
        for source, (ttft, total) in rollups.stored_latencies(settled).items():
            parts[source][0].extend(ttft)
            parts[source][1].extend(total)
    if live is not None:
        for source, (ttft, total) in queries.latency_values(live).items():
            parts[source][0].append(np.asarray(ttft, dtype=rollups.VALUES_DTYPE))
            parts[source][1].append(np.asarray(total, dtype=rollups.VALUES_DTYPE))
    return {source: (_sorted(ttft), _sorted(total)) for source, (ttft, total) in parts.items()}


def _sorted(arrays: list[np.ndarray]) -> np.ndarray:
    if not arrays:
        return np.empty(0, dtype=rollups.VALUES_DTYPE)
    return np.sort(np.concatenate(arrays))


def build_dashboard(
    scope: Scope, gpu_cost_per_hour: float, now: datetime | None = None
) -> Dashboard:
    """Every table of the overview page (FAQ gaps are their own page: gaps.py)."""
    groups, questions, conversations = daily_figures(scope, now)
    return Dashboard(
        daily=queries.daily_table(scope, groups, questions, conversations),
        source_mix=queries.source_mix_table(scope, groups),
        sources=queries.sources_table(groups),
        latency=queries.latency_table(latency_values(scope, now)),
        cost=queries.cost_table(groups, gpu_cost_per_hour),
        handoffs=handoffs.handoff_table(scope),
        rating_by_source=handoffs.rating_by_source_table(scope),
        suggestions=suggestions.suggestion_table(scope, gpu_cost_per_hour),
    )
