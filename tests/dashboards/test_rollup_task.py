"""The periodic task settles past days' rollups so page views do not compute them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from chatplatform.dashboards.models import DailySourceRollup
from chatplatform.dashboards.tasks import REFRESH_ROLLUPS_TASK, refresh_rollups
from chatplatform.tenants.models import Site
from tests.dashboards import factories

pytestmark = pytest.mark.django_db


def test_refresh_rollups_task_is_scheduled_on_the_cpu_queue() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["refresh-dashboard-rollups"]
    assert entry["task"] == REFRESH_ROLLUPS_TASK
    assert entry["options"]["queue"] == "cpu"


def test_refresh_rollups_settles_past_days() -> None:
    # given a site with answers ten days ago and none settled yet
    site = Site.objects.create(name="shop")
    ten_days_ago = timezone.now() - timedelta(days=10)
    conv = factories.conversation(site, ten_days_ago)
    for _ in range(3):
        q = factories.question(conv, "where is my parcel", ten_days_ago)
        factories.answer(q, "faq", ttft_ms=12.0, total_ms=12.0, sla_met=True)
    assert not DailySourceRollup.objects.exists()
    # when the periodic task runs
    refresh_rollups()
    # then that day is settled, counting the three answers
    rows = DailySourceRollup.objects.filter(site=site, day=ten_days_ago.date(), source="faq")
    assert rows.count() == 1
    assert rows.get().n == 3
