"""Answers the orchestrator's probes (`/livez`, `/readyz`) ahead of every other middleware.

Kubernetes and Docker probe a container by its own address: the request's Host is the pod's
IP, which ALLOWED_HOSTS rightly does not list, and Django would answer 400 before the view
runs. The probes reveal nothing but up/down, so they are answered whatever the Host; every
other path, `/healthz` included, goes through the usual checks. Must come first in MIDDLEWARE.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from chatplatform.health.views import livez, readyz

PROBES = {"/livez": livez, "/readyz": readyz}


class ProbeMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        probe = PROBES.get(request.path_info)
        if probe is not None and request.method in ("GET", "HEAD"):
            return probe(request)
        return self.get_response(request)
