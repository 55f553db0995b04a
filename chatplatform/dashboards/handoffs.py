"""The dashboard's human-agent figures: handoffs, how fast agents answer and resolve, and
customers' ratings by the answer sources their conversation had.

Counted live from `Handoff` rows (one per request of a person, chatplatform/agents/models.py),
which are few next to messages, for handoffs *requested* in the scope's range. Definitions:

* time to first agent reply: request -> the agent's first message (handoffs with a reply).
* resolution time: request -> resolved (resolved handoffs).
* rating by answer source: each rated handoff counts once for every source that answered in
  its conversation (bot sources and `agent`): a rating judges the whole conversation.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from chatplatform.agents.models import Handoff
from chatplatform.conversations.models import Message
from chatplatform.dashboards.queries import (
    ANSWER_ROLES,
    PERCENTILES,
    SOURCE_ORDER,
    Scope,
    Table,
    nearest_rank,
    ratio,
)


def _handoffs(scope: Scope):  # noqa: ANN202 - a Handoff queryset
    return Handoff.objects.filter(
        site_id__in=scope.site_ids, requested_at__gte=scope.start, requested_at__lt=scope.end
    )


def _seconds(pairs: list[tuple[datetime, datetime | None]]) -> list[float]:
    return sorted((end - start).total_seconds() for start, end in pairs if end is not None)


def handoff_table(scope: Scope) -> Table:
    table = Table("handoffs", "Human agents: handoffs", ["figure", "value"])
    rows = list(_handoffs(scope).values())
    first_reply = _seconds([(r["requested_at"], r["first_agent_reply_at"]) for r in rows])
    resolved = [r for r in rows if r["status"] == Handoff.Status.RESOLVED]
    resolution = _seconds([(r["requested_at"], r["ended_at"]) for r in resolved])
    ratings = [r["rating"] for r in rows if r["rating"] is not None]

    def count(predicate) -> int:  # noqa: ANN001 - a function of a row
        return sum(1 for r in rows if predicate(r))

    table.rows = [
        ["handoffs requested", len(rows)],
        ["claimed by an agent", count(lambda r: r["claimed_at"] is not None)],
        ["told: outside opening hours", count(lambda r: r["unavailable"] == "closed")],
        ["told: no agent answered in time", count(lambda r: r["unavailable"] == "no_agent")],
        ["e-mail addresses left", count(lambda r: bool(r["contact_email"]))],
        ["resolved", len(resolved)],
        ["handed back to the bot", count(lambda r: r["status"] == Handoff.Status.HANDED_BACK)],
        ["still open", count(lambda r: r["status"] in Handoff.OPEN_STATUSES)],
        *[[f"time to first agent reply p{p} s", nearest_rank(first_reply, p)] for p in PERCENTILES],
        *[[f"resolution time p{p} s", nearest_rank(resolution, p)] for p in PERCENTILES],
        ["ratings", len(ratings)],
        ["average rating (1-5)", ratio(sum(ratings), len(ratings))],
    ]
    return table


def rating_by_source_table(scope: Scope) -> Table:
    table = Table(
        "rating_by_source",
        "Human agents: rating by answer source",
        ["source", "rated conversations", "average rating (1-5)", "rated 4-5"],
    )
    rated = dict(
        _handoffs(scope).filter(rating__isnull=False).values_list("conversation_id", "rating")
    )
    sources = (
        Message.objects.filter(conversation_id__in=list(rated), role__in=ANSWER_ROLES)
        .values_list("conversation_id", "source")
        .distinct()
    )
    per_source: dict[str, list[int]] = defaultdict(list)
    for conversation_id, source in sources:
        per_source[source].append(rated[conversation_id])
    for source in SOURCE_ORDER:
        scores = per_source.get(source, [])
        table.rows.append(
            [
                source.value,
                len(scores),
                ratio(sum(scores), len(scores)),
                ratio(sum(s >= 4 for s in scores), len(scores)),
            ]
        )
    return table
