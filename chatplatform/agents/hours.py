"""Opening hours of a site's agents: is someone expected now, and when do they return.

Pure functions over (weekday, opens, closes) intervals in the site's time zone, so the rule is
tested without a database. No intervals means agents are expected around the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

MIDNIGHT = time(0)


@dataclass(frozen=True)
class Interval:
    weekday: int  # 0 = Monday, as datetime.weekday()
    opens: time
    closes: time  # MIDNIGHT = until the end of the day


def is_open(intervals: Sequence[Interval], zone: ZoneInfo, now: datetime) -> bool:
    """Whether `now` (an aware datetime) falls in one of the intervals, read in `zone`."""
    if not intervals:
        return True
    local = now.astimezone(zone)
    clock, weekday = local.time().replace(tzinfo=None), local.weekday()
    return any(
        i.weekday == weekday and i.opens <= clock and (i.closes == MIDNIGHT or clock < i.closes)
        for i in intervals
    )


def next_opening(intervals: Sequence[Interval], zone: ZoneInfo, now: datetime) -> datetime | None:
    """The next start of an interval after `now`, in `zone` (None without intervals)."""
    if not intervals:
        return None
    local = now.astimezone(zone)
    for days_ahead in range(8):  # a week and a day: today's later hours, or the same day next week
        day = local.date() + timedelta(days=days_ahead)
        for opens in sorted(i.opens for i in intervals if i.weekday == day.weekday()):
            start = datetime.combine(day, opens, tzinfo=zone)
            if start > local:
                return start
    return None


def closed_text(opens_at: datetime | None) -> str:
    """What the widget says when a customer asks for a person outside opening hours."""
    if opens_at is None:
        return "Our team is not available right now."
    when = opens_at.strftime("%A at %H:%M")
    return f"Our team is away right now; they are back on {when} ({opens_at.tzinfo})."
