"""Health endpoints (README, "Health"):

- `/livez`: the process answers (no dependency is checked): restart it when this fails.
- `/readyz`: this process's own dependencies, database and Redis: send it traffic when this
  passes. A web process is ready without workers (a cache hit needs none).
- `/healthz`: the full report for people and monitors, workers of each queue included.

All return JSON and HTTP 503 when something is down. `/livez` and `/readyz` are answered by
`ProbeMiddleware` before Django's host check, so an orchestrator's probe (which names the
pod's address as Host) is not refused with a 400.
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from chatplatform.health.checks import CheckResult, check_database, check_redis, worker_ping

logger = logging.getLogger(__name__)


def report(checks: dict[str, CheckResult]) -> JsonResponse:
    ok = all(result.ok for result in checks.values())
    body = {
        "status": "ok" if ok else "degraded",
        "checks": {name: {"ok": r.ok, "detail": r.detail} for name, r in checks.items()},
    }
    return JsonResponse(body, status=200 if ok else 503)


@never_cache
def livez(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    return report({"database": check_database(), "redis": check_redis()})


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    checks = {"database": check_database(), "redis": check_redis()}
    if checks["redis"].ok:
        checks.update({f"worker_{queue}": r for queue, r in worker_ping.check().items()})
    return report(checks)
