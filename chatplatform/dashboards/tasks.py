"""Periodic work of the dashboards, run by the CPU worker's embedded beat (see settings)."""

from __future__ import annotations

from celery import shared_task
from django.core.management import call_command

from inference.contracts import Queue

REFRESH_ROLLUPS_TASK = "chatplatform.dashboards.refresh_rollups"


@shared_task(name=REFRESH_ROLLUPS_TASK, queue=Queue.CPU.value, ignore_result=True)
def refresh_rollups() -> None:
    """Settle the daily rollups ahead of time so no page view pays for computing them."""
    call_command("refresh_dashboard_rollups", days=90)
