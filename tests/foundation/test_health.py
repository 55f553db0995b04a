"""/healthz reports database, Redis and each worker queue; non-200 when one is down."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.test import Client

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.django_db


def test_healthz_is_503_and_names_the_missing_workers() -> None:
    # given database and Redis up, but no worker running
    response = Client().get("/healthz")
    # then
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "degraded"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["redis"]["ok"] is True
    assert body["checks"]["worker_cpu"] == {"ok": False, "detail": "no worker answered"}
    assert body["checks"]["worker_inference"]["ok"] is False


def test_healthz_is_503_when_redis_is_down(settings) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = Client().get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["redis"]["ok"] is False


@pytest.mark.slow
def test_healthz_sees_a_real_cpu_worker(redis_url: str) -> None:
    # given a real Celery worker consuming the CPU queue
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DJANGO_SETTINGS_MODULE": "chatplatform.settings.test",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "chatplatform.celery_app", "worker", "-Q", "cpu",
         "-n", "cpu@%h", "--pool", "solo", "-l", "WARNING"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # when it has started (it answers pings once connected)
        deadline = time.monotonic() + 60
        checks: dict = {}
        while time.monotonic() < deadline:
            checks = Client().get("/healthz").json()["checks"]
            if checks["worker_cpu"]["ok"]:
                break
            time.sleep(0.5)
        # then the CPU queue is reported alive, by its worker's name
        assert checks["worker_cpu"]["ok"] is True
        assert checks["worker_cpu"]["detail"].startswith("cpu@")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
