"""The dashboard's human-agent figures on known handoffs: counts, time to first agent reply,
resolution time, and rating by answer source (page and CSV)."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client

from chatplatform.agents.models import Handoff
from chatplatform.dashboards import handoffs
from chatplatform.dashboards.queries import Scope
from tests.dashboards.conftest import DAY1, DAY2, RANGE, KnownData
from tests.dashboards.factories import answer, conversation, question

pytestmark = pytest.mark.django_db


def handoff(conv, at, **fields) -> Handoff:  # noqa: ANN001
    return Handoff.objects.create(
        site=conv.site, conversation=conv, requested_at=at, waiting_since=at, **fields
    )


@pytest.fixture
def known_handoffs(known_data: KnownData) -> KnownData:
    """Shop: a handoff resolved with rating 4 in a conversation answered by faq, cache,
    fallback, llm (c1-like); one resolved with rating 2 answered by an agent and the faq; one
    handed back after a reply, never rated; one still waiting, told nobody answered, with an
    address. Other: a rated handoff that must not count."""
    shop, other = known_data.shop, known_data.other
    rich = conversation(shop, DAY1)
    q = question(rich, "Broken zip", DAY1)
    for source in ("faq", "cache", "fallback", "llm"):
        answer(q, source, ttft_ms=1, total_ms=1, sla_met=True)
    answer(q, "agent", ttft_ms=None, total_ms=None, sla_met=None)
    handoff(rich, DAY1, status="resolved", claimed_at=DAY1 + timedelta(seconds=30),
            first_agent_reply_at=DAY1 + timedelta(seconds=60),
            ended_at=DAY1 + timedelta(seconds=600), rating=4)  # fmt: skip
    plain = conversation(shop, DAY2)
    q = question(plain, "Refund?", DAY2)
    answer(q, "faq", ttft_ms=1, total_ms=1, sla_met=True)
    answer(q, "agent", ttft_ms=None, total_ms=None, sla_met=None)
    handoff(plain, DAY2, status="resolved", claimed_at=DAY2 + timedelta(seconds=10),
            first_agent_reply_at=DAY2 + timedelta(seconds=120),
            ended_at=DAY2 + timedelta(seconds=1800), rating=2)  # fmt: skip
    back = conversation(shop, DAY2)
    handoff(back, DAY2, status="handed_back", claimed_at=DAY2, ended_at=DAY2,
            first_agent_reply_at=DAY2 + timedelta(seconds=30))  # fmt: skip
    waiting = conversation(shop, DAY2)
    handoff(waiting, DAY2, unavailable="no_agent", contact_email="a@example.com")
    elsewhere = conversation(other, DAY1)
    answer(question(elsewhere, "x", DAY1), "agent", ttft_ms=None, total_ms=None, sla_met=None)
    handoff(elsewhere, DAY1, status="resolved", ended_at=DAY1, rating=1)
    return known_data


def shop_scope(data: KnownData) -> Scope:
    start = DAY1.replace(hour=0, minute=0)
    return Scope([data.shop.pk], start, start + timedelta(days=2))


def test_handoff_counts_and_times(known_handoffs: KnownData) -> None:
    figures = dict(handoffs.handoff_table(shop_scope(known_handoffs)).rows)
    assert figures["handoffs requested"] == 4
    assert figures["claimed by an agent"] == 3
    assert figures["told: no agent answered in time"] == 1
    assert figures["e-mail addresses left"] == 1
    assert (figures["resolved"], figures["handed back to the bot"], figures["still open"]) == (
        2, 1, 1
    )  # fmt: skip
    # first replies after 30, 60 and 120 s; resolutions after 600 and 1800 s (nearest rank)
    assert figures["time to first agent reply p50 s"] == 60.0
    assert figures["time to first agent reply p95 s"] == 120.0
    assert figures["resolution time p50 s"] == 600.0
    assert figures["resolution time p99 s"] == 1800.0
    assert (figures["ratings"], figures["average rating (1-5)"]) == (2, 3.0)


def test_rating_by_answer_source(known_handoffs: KnownData) -> None:
    table = handoffs.rating_by_source_table(shop_scope(known_handoffs))
    rows = {row[0]: row[1:] for row in table.rows}
    assert rows["faq"] == [2, 3.0, 0.5]  # both rated conversations had an FAQ answer
    assert rows["llm"] == [1, 4.0, 1.0]
    assert rows["agent"] == [2, 3.0, 0.5]
    assert rows["fallback"] == [1, 4.0, 1.0]


def test_the_page_and_csv_show_them(client: Client, superuser: User, known_handoffs) -> None:
    client.force_login(superuser)
    params = {**RANGE, "site": known_handoffs.shop.pk}
    page = client.get("/dashboard/", params).content.decode()
    assert 'id="table-handoffs"' in page and 'id="table-rating_by_source"' in page
    assert "time to first agent reply" in page
    export = client.get("/dashboard/export/rating_by_source.csv", params)
    rows = list(csv.reader(io.StringIO(export.content.decode())))
    assert rows[0] == ["source", "rated conversations", "average rating (1-5)", "rated 4-5"]
    assert ["llm", "1", "4.0", "1.0"] in rows
