"""Known dashboard data: two sites, two days, every answer source, exact figures in tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import User

from chatplatform.dashboards.models import SiteAccess
from chatplatform.tenants.models import Site
from tests.dashboards.factories import answer, conversation, question

DAY1 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
DAY2 = datetime(2026, 3, 3, 15, 30, tzinfo=UTC)
RANGE = {"start": "2026-03-02", "end": "2026-03-03"}


@dataclass
class KnownData:
    shop: Site
    other: Site


@pytest.fixture
def known_data(db) -> KnownData:
    """Site "Shop": day 1 has FAQ, cache, holding reply + model answers and a handoff;
    day 2 has a model answer, an FAQ answer and a human agent. Site "Other": one model answer
    on day 1 that must never appear in Shop's figures."""
    shop = Site.objects.create(name="Shop")
    other = Site.objects.create(name="Other")

    c1 = conversation(shop, DAY1, handoff=True)
    q1 = question(c1, "How do I reset my password?", DAY1)
    answer(q1, "faq", ttft_ms=10, total_ms=10, sla_met=True, feedback=1)
    q2 = question(c1, "Where is my parcel?", DAY1)
    answer(q2, "cache", ttft_ms=20, total_ms=20, sla_met=True, feedback=-1)
    q3 = question(c1, "Can I pay with a voucher?", DAY1)
    answer(q3, "fallback", ttft_ms=250, total_ms=250, sla_met=True, text="One moment...")
    answer(
        q3,
        "llm",
        ttft_ms=400,
        total_ms=1400,
        sla_met=False,
        feedback=1,
        gpu_seconds=2.0,
        prompt_tokens=100,
        completion_tokens=50,
        text="Yes, vouchers work at checkout.",
    )

    c2 = conversation(shop, DAY2)
    q4 = question(c2, "Do you ship to Norway?", DAY2)
    answer(
        q4,
        "llm",
        ttft_ms=200,
        total_ms=1000,
        sla_met=True,
        gpu_seconds=1.0,
        prompt_tokens=80,
        completion_tokens=40,
        text="We ship to Norway in 5 days.",
    )
    q5 = question(c2, "What are your opening hours?", DAY2)
    answer(q5, "faq", ttft_ms=5, total_ms=5, sla_met=True)
    answer(q5, "agent", ttft_ms=None, total_ms=60_000, sla_met=None)

    c3 = conversation(other, DAY1)
    q6 = question(c3, "Secret question of the other site", DAY1)
    answer(q6, "llm", ttft_ms=100, total_ms=500, sla_met=True, gpu_seconds=4.0)
    return KnownData(shop=shop, other=other)


@pytest.fixture
def superuser(db) -> User:
    return User.objects.create_superuser("boss", "boss@example.com", "pw")


@pytest.fixture
def shop_staff(db, known_data: KnownData) -> User:
    """A staff user restricted to the Shop site."""
    user = User.objects.create_user("shopstaff", password="pw", is_staff=True)
    SiteAccess.objects.create(user=user, site=known_data.shop)
    return user
