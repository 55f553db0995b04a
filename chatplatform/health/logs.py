"""Keeps the health endpoints' 503 answers out of the error log.

Django logs every 5xx response at ERROR ("Service Unavailable: /healthz"). For the health
endpoints a 503 is the answer, not a failure of the server: while the platform starts it is
expected (workers load their models), and a monitor that polls a degraded platform would fill
the log with one ERROR a probe. The records are dropped here; /healthz's JSON says what is down.
"""

from __future__ import annotations

import logging

HEALTH_PATHS = ("/livez", "/readyz", "/healthz")


class HealthUnavailableFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        request = getattr(record, "request", None)
        path = getattr(request, "path_info", None)
        return not (status == 503 and path in HEALTH_PATHS)
