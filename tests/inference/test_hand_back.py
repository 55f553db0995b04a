"""Hand-back between two real inference workers (inference/admission.py, service.py).

A worker that takes a task it cannot start before the task's deadline, while another worker
reports a free slot, puts it back on the shared queue for that worker, once; a task that would
start past the shed horizon is handed back once too, and refused as `overloaded` by the next
worker instead of being handed around. Real redis-server, two real Celery workers with the
offline model, the conversation's channel-layer group watched as the web consumer watches it.

The busy worker reads a queue of its own (`inference-busy`) and the idle one the shared
`inference` queue, so the test decides which worker takes a task first; the hand-back itself
is production's (back to the shared queue, where only an idle worker is waiting here).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from inference.admission import handed_back_key
from inference.contracts import HANDED_BACK_TOTAL_KEY, SHED_TOTAL_KEY, cancel_key
from tests.inference.test_worker import (
    GroupWatcher,
    Worker,
    await_until,
    finalized,
    make_request,
    send,
    start_worker,
    stop_workers,
    wait_ready,
)

pytestmark = pytest.mark.slow

REDIS_DB = 8  # test_worker.py uses 7
BUSY_QUEUE = "inference-busy"


@pytest.fixture(scope="module")
def url(redis_url: str) -> str:
    url = redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    redis_lib.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="module")
def workers(url: str, tiny_model_dir: Path, tmp_path_factory) -> Iterator[dict[str, Worker]]:
    log_dir = tmp_path_factory.mktemp("hand-back-logs")
    started = {
        # One running slot: a second task has to wait for the first one's whole answer.
        "busy": start_worker(
            "busy",
            url,
            tiny_model_dir,
            log_dir,
            queue=BUSY_QUEUE,
            threads=2,
            INFERENCE_MAX_RUNNING="1",
            INFERENCE_MAX_NEW_TOKENS="1024",
        ),  # fmt: skip
        "idle": start_worker("idle", url, tiny_model_dir, log_dir),
    }
    try:
        for worker in started.values():
            wait_ready(worker)
        yield started
    finally:
        stop_workers(list(started.values()))


def counter(redis: redis_lib.Redis, key: str) -> int:
    return int(redis.get(key) or 0)


def capacity_reported(redis: redis_lib.Redis) -> bool:
    """Both workers have published their capacity (the fleet view admission reads)."""
    return len(list(redis.scan_iter(match="inference:capacity:*"))) == 2


async def test_a_task_the_busy_worker_cannot_start_in_time_goes_to_the_idle_worker(
    workers, client, redis, url
) -> None:
    assert await_until(lambda: capacity_reported(redis), timeout=10)
    handed_back_before = counter(redis, HANDED_BACK_TOTAL_KEY)
    # given the busy worker's only slot streaming a long answer
    long = make_request("long-1", max_new_tokens=1024)
    async with GroupWatcher(url, long["conversation_id"]) as long_watcher:
        send(client, long, queue=BUSY_QUEUE)
        await long_watcher.until(lambda e: e["type"] == "answer.start")
        # when it takes a question that waited in Redis until its deadline
        now = time.time()
        question = make_request("tight-1", arrival=now - 0.3, deadline=now)
        async with GroupWatcher(url, question["conversation_id"]) as watcher:
            send(client, question, queue=BUSY_QUEUE)
            end = await watcher.final(timeout=60)
            await watcher.quiet_for(1.0)
        redis.set(cancel_key("long-1"), "1", ex=60)  # free the busy worker for the next test
        await long_watcher.final(timeout=60)
    # then the idle worker answered it, once, while the long answer was still streaming
    assert end["type"] == "answer.end", watcher.events
    types = [e["type"] for e in watcher.events]
    assert types.count("answer.start") == 1 and types.count("answer.end") == 1
    assert end["result"]["text"] and end["result"]["finish_reason"] in {"length", "stop"}
    busy_log, idle_log = workers["busy"].log_text(), workers["idle"].log_text()
    assert "message tight-1: handed_back" in busy_log
    assert "message tight-1: received" in idle_log
    assert busy_log.count("message tight-1: received") == 1  # never taken back
    assert redis.exists(handed_back_key("tight-1"))
    assert counter(redis, HANDED_BACK_TOTAL_KEY) == handed_back_before + 1
    assert await_until(lambda: len(finalized(redis, "tight-1")) == 1)


async def test_a_task_past_the_shed_horizon_is_handed_back_once_then_refused(
    workers, client, redis, url
) -> None:
    assert await_until(lambda: capacity_reported(redis), timeout=10)
    handed_back_before = counter(redis, HANDED_BACK_TOTAL_KEY)
    shed_before = counter(redis, SHED_TOTAL_KEY)
    # given a question that has waited 40 s (the shed horizon is 30 s), both workers free
    arrival = time.time() - 40
    question = make_request("late-1", arrival=arrival, deadline=arrival + 0.3)
    async with GroupWatcher(url, question["conversation_id"]) as watcher:
        # when the busy worker takes it
        send(client, question, queue=BUSY_QUEUE)
        final = await watcher.final(timeout=60)
        await watcher.quiet_for(1.0)
    # then it went to the other worker once, which refused it as overloaded
    assert final["type"] == "answer.refused" and final["code"] == "overloaded", final
    assert [e["type"] for e in watcher.events] == ["answer.refused"]
    assert "message late-1: handed_back" in workers["busy"].log_text()
    assert "message late-1: refused:overloaded" in workers["idle"].log_text()
    assert counter(redis, HANDED_BACK_TOTAL_KEY) == handed_back_before + 1
    assert counter(redis, SHED_TOTAL_KEY) == shed_before + 1
    assert await_until(lambda: len(finalized(redis, "late-1")) == 1)
