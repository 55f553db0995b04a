"""The rules of "nobody available": opening hours (pure logic, then through a customer socket)
and "no agent answered within N minutes" (the sweep), with what the customer is told."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from chatplatform.agents import hours, sweep
from chatplatform.agents.models import AgentSettings, Handoff, OpeningHours
from tests.chat.conftest import Client, make_site

PARIS = ZoneInfo("Europe/Paris")
WEEKDAYS_9_TO_17 = [hours.Interval(day, time(9), time(17)) for day in range(5)]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("moment", "open_now"),
    [
        ("2026-03-02T09:00:00+01:00", True),  # Monday 09:00 Paris: opens
        ("2026-03-02T08:59:59+01:00", False),
        ("2026-03-02T16:59:59+01:00", True),
        ("2026-03-02T17:00:00+01:00", False),  # closes at 17:00 sharp
        ("2026-03-02T08:30:00+00:00", True),  # 09:30 in Paris, given in UTC
        ("2026-03-07T12:00:00+01:00", False),  # Saturday
        ("2026-03-30T07:30:00+00:00", True),  # after the DST switch: 09:30 CEST
        ("2026-03-30T06:30:00+00:00", False),  # 08:30 CEST
    ],
)
def test_opening_hours_in_the_sites_time_zone(moment: str, open_now: bool) -> None:
    assert hours.is_open(WEEKDAYS_9_TO_17, PARIS, at(moment)) is open_now


def test_no_intervals_means_always_open_and_midnight_closes_the_day() -> None:
    assert hours.is_open([], PARIS, at("2026-03-07T03:00:00+00:00"))
    late = [hours.Interval(5, time(20), time(0))]  # Saturday 20:00-24:00
    assert hours.is_open(late, PARIS, at("2026-03-07T23:59:00+01:00"))
    assert not hours.is_open(late, PARIS, at("2026-03-08T00:00:00+01:00"))


def test_next_opening_after_a_friday_evening_is_monday_morning() -> None:
    opening = hours.next_opening(WEEKDAYS_9_TO_17, PARIS, at("2026-03-06T18:00:00+01:00"))
    assert opening == datetime(2026, 3, 9, 9, 0, tzinfo=PARIS)
    assert "Monday at 09:00 (Europe/Paris)" in hours.closed_text(opening)
    assert hours.next_opening([], PARIS, at("2026-03-06T18:00:00+01:00")) is None


def _closed_all_day_today(site) -> None:  # noqa: ANN001 - a Site
    """Opening hours on another weekday only: closed now, whatever the test's clock says."""
    AgentSettings.objects.create(site=site, timezone="UTC")
    other_day = (timezone.now().weekday() + 3) % 7
    OpeningHours.objects.create(site=site, weekday=other_day, opens=time(9), closes=time(17))


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio(loop_scope="session")
async def test_outside_opening_hours_the_customer_is_told_and_asked_for_an_address(
    client: Client,
) -> None:
    site = await sync_to_async(make_site)(cache_enabled=False)
    await sync_to_async(_closed_all_day_today)(site)
    await client.hello(site)
    await client.send({"type": "handoff"})
    ok = await client.receive_type("handoff.ok")
    assert ok["status"] == "waiting" and ok["unavailable"] == "closed"
    unavailable = await client.receive_type("handoff.unavailable")
    assert unavailable["unavailable"] == "closed" and unavailable["contact_left"] is False
    assert "away right now" in unavailable["message"] and "e-mail" in unavailable["message"]
    opens_at = datetime.fromisoformat(unavailable["opens_at"])
    assert opens_at > datetime.now(UTC) and opens_at.hour == 9
    # the request still waits in the inbox (an agent may be around), and the address is kept
    await client.send({"type": "contact", "email": "late@example.com"})
    await client.receive_type("contact.ok")
    handoff = await sync_to_async(Handoff.objects.get)(site=site)
    assert (handoff.status, handoff.unavailable, handoff.contact_email) == (
        "waiting",
        "closed",
        "late@example.com",
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio(loop_scope="session")
async def test_no_agent_within_n_minutes_is_said_once_and_survives_a_reconnect(
    client: Client,
) -> None:
    site = await sync_to_async(make_site)(cache_enabled=False)
    await sync_to_async(AgentSettings.objects.create)(site=site, reply_within_minutes=3)
    welcome = await client.hello(site)
    await client.send({"type": "handoff"})
    ok = await client.receive_type("handoff.ok")
    assert ok["reply_within_minutes"] == 3 and ok["unavailable"] is None
    requested = (await sync_to_async(Handoff.objects.get)(site=site)).requested_at
    # before N minutes nothing happens
    swept = await sync_to_async(sweep.sweep)(requested + timedelta(minutes=2, seconds=59))
    assert swept == {"requeued": 0, "no_agent": 0}
    # after N minutes the customer is told, once
    later = requested + timedelta(minutes=3)
    assert (await sync_to_async(sweep.sweep)(later))["no_agent"] == 1
    told = await client.receive_type("handoff.unavailable")
    assert told["unavailable"] == "no_agent" and "within 3 minutes" in told["message"]
    assert (await sync_to_async(sweep.sweep)(later + timedelta(minutes=5)))["no_agent"] == 0
    assert await client.communicator.receive_nothing(timeout=0.3)
    # a customer who comes back sees it again (and the form for the address) from the welcome
    await client.close()
    again = Client()
    await again.connect()
    resumed = await again.hello(site, welcome["conversation_id"])
    assert resumed["handoff"]["unavailable"] == "no_agent"
    assert resumed["handoff"]["contact_left"] is False
    await again.close()


def test_the_sweep_is_scheduled_on_the_cpu_queue_as_a_task_the_worker_knows() -> None:
    # without this entry (or with a task name the worker does not have) the "no agent within
    # N minutes" rule and the reconnect grace would never be applied
    from django.conf import settings

    from chatplatform.agents.tasks import SWEEP_TASK
    from chatplatform.celery_app import app

    entry = settings.CELERY_BEAT_SCHEDULE["sweep-agent-handoffs"]
    assert entry["task"] == SWEEP_TASK and entry["options"]["queue"] == "cpu"
    assert entry["schedule"] <= 60  # the rules count in minutes
    app.loader.import_default_modules()  # what the worker does at start (autodiscovery)
    assert SWEEP_TASK in app.tasks
