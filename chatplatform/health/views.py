from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from chatplatform.health.checks import check_database, check_redis, check_workers


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """JSON status of every part; HTTP 503 when any is down."""
    checks = {"database": check_database(), "redis": check_redis()}
    if checks["redis"].ok:
        checks.update({f"worker_{queue}": r for queue, r in check_workers().items()})
    ok = all(result.ok for result in checks.values())
    body = {
        "status": "ok" if ok else "degraded",
        "checks": {name: {"ok": r.ok, "detail": r.detail} for name, r in checks.items()},
    }
    return JsonResponse(body, status=200 if ok else 503)
