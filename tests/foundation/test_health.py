"""Health endpoints: /livez (the process answers), /readyz (database and Redis, for any Host
header, without asking the workers), /healthz (everything, workers included); 503 when a part
is down, and no ERROR line for it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.test import Client

from chatplatform.health import checks as health_checks

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
        health_checks.worker_ping._at = 0.0  # no reuse of an earlier test's answer
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


def test_livez_answers_for_any_host() -> None:
    # given a probe naming the pod's own address, which ALLOWED_HOSTS does not list
    response = Client().get("/livez", HTTP_HOST="10.244.1.17:8000")
    # then it is answered, not refused with a 400
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_database_and_redis_only() -> None:
    # given no worker running: the web process is ready anyway (a cache hit needs none)
    response = Client().get("/readyz", HTTP_HOST="10.244.1.17:8000")
    body = response.json()
    assert response.status_code == 200
    assert set(body["checks"]) == {"database", "redis"}


def test_readyz_is_503_when_redis_is_down(settings) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["redis"]["ok"] is False


def test_healthz_keeps_the_host_check() -> None:
    assert Client().get("/healthz", HTTP_HOST="10.244.1.17:8000").status_code == 400


def test_a_degraded_health_report_logs_no_error(caplog: pytest.LogCaptureFixture) -> None:
    # given workers not up yet, as during every start of the platform
    with caplog.at_level(logging.INFO):
        assert Client().get("/healthz").status_code == 503
        assert Client().get("/readyz", HTTP_HOST="10.244.1.17:8000").status_code == 200
    # then the 503 is an answer, not an ERROR line ("Service Unavailable: /healthz")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_probes_in_a_burst_share_one_worker_ping(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a fresh ping whose every call is counted
    ping = health_checks.WorkerPing()
    calls: list[float] = []
    real_ping = ping._ping

    def counted() -> dict[str, health_checks.CheckResult]:
        calls.append(time.monotonic())
        return real_ping()

    monkeypatch.setattr(ping, "_ping", counted)
    # when five probes come at once
    results = [ping.check() for _ in range(5)]
    # then the workers were pinged once, and every probe got that answer
    assert len(calls) == 1
    assert all(result == results[0] for result in results)


def test_the_ping_waits_for_every_worker_while_a_queue_has_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given workers that come up one after the other (pings answered as scripted here)
    from chatplatform.celery_app import app

    answers = [
        [{"inference@box": {"ok": "pong"}}],  # the CPU worker is still starting
        [{"inference@box": {"ok": "pong"}}, {"cpu@box": {"ok": "pong"}}],
        [{"inference@box": {"ok": "pong"}}, {"cpu@box": {"ok": "pong"}}],
    ]
    limits: list[int | None] = []

    def ping(timeout: float, limit: int | None = None) -> list[dict]:
        limits.append(limit)
        return answers[len(limits) - 1]

    monkeypatch.setattr(app.control, "ping", ping)
    ping_check = health_checks.WorkerPing()
    # when probed three times, each after the reuse window
    results = []
    for _ in answers:
        ping_check._at = 0.0
        results.append(ping_check.check())
    # then: no early stop while the CPU queue had no worker, so it is heard once it is up;
    # once both are known, the ping ends when both have answered
    assert limits == [None, None, 2]
    assert results[0]["cpu"].ok is False
    assert results[1]["cpu"].ok is True and results[2]["cpu"].ok is True
