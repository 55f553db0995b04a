"""Liveness checks of each part the platform needs: database, Redis, Celery workers."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from django.conf import settings
from django.db import connection

from inference.contracts import Queue

WORKER_PING_TIMEOUT_S = 1.0  # a healthy worker answers a control ping in a few ms


@dataclass
class CheckResult:
    ok: bool
    detail: str


def check_database() -> CheckResult:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return CheckResult(True, connection.vendor)
    except Exception as error:  # any driver error means "down"; report it, don't raise
        return CheckResult(False, f"{type(error).__name__}: {error}")


def check_redis() -> CheckResult:
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1)
        client.ping()
        return CheckResult(True, settings.REDIS_URL.split("@")[-1])
    except redis.RedisError as error:
        return CheckResult(False, f"{type(error).__name__}: {error}")


def check_workers() -> dict[str, CheckResult]:
    """One result per queue: ok when at least one worker consuming it answers a ping.

    Workers are named after their queue (`cpu@host`, `inference@host`), see the run command.
    """
    from chatplatform.celery_app import app

    try:
        replies = app.control.ping(timeout=WORKER_PING_TIMEOUT_S)
    except Exception as error:  # broker down: every worker check fails with that reason
        return {q.value: CheckResult(False, f"{type(error).__name__}: {error}") for q in Queue}
    names = [name for reply in replies for name in reply]
    results = {}
    for queue in Queue:
        alive = [name for name in names if name.startswith(f"{queue.value}@")]
        detail = ", ".join(alive) if alive else "no worker answered"
        results[queue.value] = CheckResult(bool(alive), detail)
    return results
