"""The inference worker survives a Redis restart while it holds unacknowledged tasks.

Before inference/broker.py, the worker's reconnect re-queued its running tasks from memory
through a transport that had already dropped its client, and died: `Restoring N
unacknowledged message(s)` then `Unrecoverable error: AttributeError('NoneType' object has no
attribute 'hostname')`; a task finishing after the reconnect then acknowledged on the closed
channel and failed the same way. Here a real worker answers real requests on its own
persistent redis-server, which is SIGKILLed and started again mid-answer.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis as redis_lib
from celery import Celery

from embedded_redis import EmbeddedRedis, free_port
from inference.worker import DEFAULT_VISIBILITY_TIMEOUT_S, redelivery_within_s
from tests.inference.test_worker import (
    await_until,
    finalized,
    make_request,
    send,
    start_worker,
    wait_ready,
)

pytestmark = pytest.mark.slow

REQUESTS = 6


def test_the_worker_survives_a_redis_restart_with_unacknowledged_tasks(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # given a worker on a Redis that keeps its data across a restart (as `make run`'s does)
    server = EmbeddedRedis(free_port(), tmp_path / "redis", persist=True)
    url = server.start()
    worker = start_worker("restart", url, tiny_model_dir, tmp_path)
    try:
        wait_ready(worker)
        redis = redis_lib.Redis.from_url(url)
        ids = [f"restart-{n}" for n in range(REQUESTS)]
        client = Celery("restart-test", broker=url)
        for message_id in ids:
            send(client, make_request(message_id, max_new_tokens=256))
        # and holding all of them unacknowledged (received, generating or waiting for a slot).
        # All taken, none left on the queue: a task popped in the very instant Redis dies,
        # before kombu records it as unacknowledged, is lost (inference/README.md, Limitations)
        assert await_until(
            lambda: redis.hlen("inference_unacked") == REQUESTS and redis.llen("inference") == 0,
            60,
        )
        # when Redis is killed and comes back on the same port with its data
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
        time.sleep(1.0)
        server.start()
        # then the worker lives on and answers every request exactly once
        answered_within = redelivery_within_s(DEFAULT_VISIBILITY_TIMEOUT_S) + 90
        assert await_until(
            lambda: all(finalized(redis, m) for m in ids), timeout=answered_within
        ), worker.log_text()[-3000:]
        time.sleep(DEFAULT_VISIBILITY_TIMEOUT_S)  # room for a wrong second answer to show
        assert [len(finalized(redis, m)) for m in ids] == [1] * REQUESTS
        assert worker.process.poll() is None, worker.log_text()[-3000:]
        log = worker.log_text()
        assert "Unrecoverable error" not in log
        assert "Connected to" in log.split("Connection to broker lost")[-1]
    finally:
        worker.process.terminate()
        worker.process.wait(timeout=30)
        server.stop()
