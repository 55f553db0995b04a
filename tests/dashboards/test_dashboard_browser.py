"""The dashboard in Debian's Chromium: charts render from real data, tables sort, and a
screenshot of the page is saved as docs/dashboard.png."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client

from chatplatform.dashboards.benchmark import PATHS, QUESTIONS, draw_answer
from chatplatform.tenants.models import Site
from tests.browser import chromium
from tests.dashboards.factories import answer, conversation, question

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
FIRST_DAY = datetime(2026, 3, 1, tzinfo=UTC)
DAYS = 14

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser() -> Iterator:
    with chromium() as launched:
        yield launched


def two_weeks_of_traffic(site: Site) -> None:
    """Seeded, varied traffic so every chart has something to show."""
    rng = random.Random(7)
    paths, weights = zip(*PATHS, strict=True)
    for day in range(DAYS):
        for n in range(rng.randint(3, 8)):
            at = FIRST_DAY + timedelta(days=day, hours=8 + n)
            conv = conversation(site, at, handoff=rng.random() < 0.1)
            for _ in range(3):
                q = question(conv, rng.choice(QUESTIONS), at)
                for source in rng.choices(paths, weights)[0]:
                    answer(q, source, **draw_answer(rng, source))


@pytest.fixture
def demo(live_server) -> dict:
    """Data and a signed-in session, made before the browser starts: Playwright's sync API
    runs an event loop in this thread, where Django refuses database calls."""
    site = Site.objects.create(name="Demo shop")
    two_weeks_of_traffic(site)
    user = User.objects.create_superuser("owner", "owner@example.com", "pw")
    client = Client()
    client.force_login(user)
    return {
        "site": site,
        "conversations": site.conversations.count(),
        "session": client.cookies["sessionid"].value,
    }


def test_dashboard_renders_charts_and_sorts_tables(demo: dict, browser, live_server) -> None:
    # given: a site with two weeks of traffic and a signed-in superuser
    site = demo["site"]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_cookies([{"name": "sessionid", "value": demo["session"], "url": live_server.url}])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    # when
    page.goto(
        f"{live_server.url}/dashboard/?site={site.pk}&start=2026-03-01&end=2026-03-14",
        wait_until="networkidle",
    )

    # then: every chart was drawn by Chart.js with the page's numbers
    page.wait_for_selector('canvas[data-rendered="1"]')
    assert errors == []
    assert page.locator('canvas[data-rendered="1"]').count() == 5
    conversations_plotted = page.evaluate(
        "Chart.getChart('chart-volume').data.datasets[0].data.reduce((a, b) => a + b, 0)"
    )
    assert conversations_plotted == demo["conversations"]
    days_plotted = page.evaluate("Chart.getChart('chart-sources').data.labels.length")
    assert days_plotted == DAYS
    # a drawn canvas has non-blank pixels
    painted = page.evaluate(
        """() => { const c = document.getElementById('chart-volume');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }"""
    )
    assert painted > 1000

    # when: sorting the daily table by customer messages (descending on the second click)
    header = page.locator("#table-daily th", has_text="customer messages")
    header.click()
    header.click()
    # then
    column = page.locator("#table-daily tbody tr td:nth-child(3)").all_inner_texts()
    values = [int(text.replace(",", "")) for text in column]
    assert values == sorted(values, reverse=True)
    assert header.get_attribute("aria-sort") == "descending"

    header.click()  # back to ascending, then day order for the picture
    page.locator("#table-daily th", has_text="day").click()
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    context.close()
