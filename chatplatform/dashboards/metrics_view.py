"""The Prometheus scrape endpoint, `/metrics`, guarded by client address and/or bearer token.

Access rules (both settings are read per request, so tests can override them):
* `METRICS_ALLOWED_IPS`: the client address must be in this list; an empty list allows any.
* `METRICS_BEARER_TOKEN`: when non-empty, the request must also carry
  `Authorization: Bearer <token>`.
A refused scrape gets 403 with a stable code and a message, never the metrics.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from chatplatform.metrics import register_inference_collector


def client_allowed(request: HttpRequest) -> tuple[bool, str]:
    """Whether this request may read the metrics, and the refusal code when not."""
    allowed_ips: list[str] = settings.METRICS_ALLOWED_IPS
    # REMOTE_ADDR, not X-Forwarded-For: a header is whatever the client says it is. Behind a
    # proxy, bind /metrics to the internal address or use the token instead.
    if allowed_ips and request.META.get("REMOTE_ADDR", "") not in allowed_ips:
        return False, "metrics_address_not_allowed"
    token: str = settings.METRICS_BEARER_TOKEN
    if token:
        sent = request.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            return False, "metrics_token_invalid"
    return True, ""


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    allowed, code = client_allowed(request)
    if not allowed:
        return JsonResponse(
            {"code": code, "message": "This address or token may not read the metrics."},
            status=403,
        )
    register_inference_collector(settings.REDIS_URL)
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
