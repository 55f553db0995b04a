"""Checks of each part the platform needs: database, Redis, Celery workers.

Each check is fast or bounded: the database and Redis checks answer in a round trip (their
timeouts, 1 s, are for a part that hangs); the workers' check pings them over the broker and
returns as soon as the workers seen last time have all answered, so it waits its whole timeout
only while a worker is missing, and its result is reused for a moment so that frequent probes
never queue up behind it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import redis
from django.conf import settings
from django.db import connection

from inference.contracts import Queue

REDIS_TIMEOUT_S = 1.0
WORKER_PING_TIMEOUT_S = 0.5  # a live worker answers a control ping in a few ms
WORKERS_RESULT_REUSED_FOR_S = 2.0  # a burst of probes costs one ping


@dataclass(frozen=True)
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


_redis_clients: dict[str, redis.Redis] = {}


def _redis_client(url: str) -> redis.Redis:
    # One pool per URL for the process: a probe every few seconds reuses its connection.
    if url not in _redis_clients:
        _redis_clients[url] = redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
        )
    return _redis_clients[url]


def check_redis() -> CheckResult:
    try:
        _redis_client(settings.REDIS_URL).ping()
        return CheckResult(True, settings.REDIS_URL.split("@")[-1])
    except redis.RedisError as error:
        return CheckResult(False, f"{type(error).__name__}: {error}")


class WorkerPing:
    """Pings every worker; remembers how many answered, to stop waiting once they all have."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expected = 0  # workers that answered the last ping
        self._result: dict[str, CheckResult] | None = None
        self._at = 0.0

    def check(self) -> dict[str, CheckResult]:
        with self._lock:  # concurrent probes share one ping
            if self._result is None or time.monotonic() - self._at > WORKERS_RESULT_REUSED_FOR_S:
                self._result = self._ping()
                self._at = time.monotonic()
            return self._result

    def _ping(self) -> dict[str, CheckResult]:
        from chatplatform.celery_app import app

        try:
            # `limit`: when every queue had a worker last time, stop as soon as as many workers
            # as then have answered. While a queue has none, wait the whole timeout so that
            # each worker that is up is heard (a new one is seen on such a ping).
            replies = app.control.ping(timeout=WORKER_PING_TIMEOUT_S, limit=self._expected or None)
        except Exception as error:  # broker down: every worker check fails with that reason
            self._expected = 0
            return {q.value: CheckResult(False, f"{type(error).__name__}: {error}") for q in Queue}
        names = [name for reply in replies for name in reply]
        results = worker_results(names)
        self._expected = len(names) if all(r.ok for r in results.values()) else 0
        return results


def worker_results(names: list[str]) -> dict[str, CheckResult]:
    """One result per queue: ok when a worker named after it answered.

    Workers are named after their queue (`cpu@host`, `inference@host`), see the run command.
    """
    results = {}
    for queue in Queue:
        alive = sorted(name for name in names if name.startswith(f"{queue.value}@"))
        detail = ", ".join(alive) if alive else "no worker answered"
        results[queue.value] = CheckResult(bool(alive), detail)
    return results


worker_ping = WorkerPing()
