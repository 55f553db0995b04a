"""The real Celery inference worker: real redis-server, real worker processes, real channel layer.

Two workers start once for the module (in parallel, to share the start-up cost). Requests go
in as Celery tasks exactly as the chat layer sends them; the test watches the conversation's
channel-layer group, and reads the CPU queue to count finalize tasks.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from celery import Celery

from inference.contracts import (
    InferenceRequest,
    PromptMessage,
    Queue,
    TaskName,
    answered_key,
    cancel_key,
    conversation_group,
)
from inference.prompt import FaqEntry, build_messages
from inference.worker import DEFAULT_VISIBILITY_TIMEOUT_S, redelivery_within_s

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# Our own Redis database, so flushes elsewhere in the suite never touch the workers' queues.
REDIS_DB = 7
# The production default, not a test-only shortcut: the killed-worker test shows that with it
# a dead worker's request comes back in time to be answered by the model, not as stale.
VISIBILITY_TIMEOUT_S = DEFAULT_VISIBILITY_TIMEOUT_S
WORKER_START_TIMEOUT_S = 120
FINAL_TYPES = {"answer.end", "answer.refused", "answer.error"}


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def db_url(redis_url: str) -> str:
    return redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}"


def start_worker(
    name: str,
    url: str,
    model_dir: Path,
    log_dir: Path,
    queue: str = Queue.INFERENCE.value,
    threads: int = 16,
    **settings: str,
) -> Worker:
    """An inference worker with the offline model reading `queue`, `settings` (environment)
    on top."""
    log = log_dir / f"{name}.log"
    env = {
        **os.environ,
        "REDIS_URL": url,
        "CHAT_MODEL": str(model_dir),
        "QUANTIZATION": "int8",
        "INFERENCE_DEVICE": "cpu",
        "INFERENCE_VISIBILITY_TIMEOUT": "",  # blank: the default, whatever this shell set
        "INFERENCE_MAX_RUNNING": "8",
        "HF_HUB_OFFLINE": "1",
        **settings,
    }
    command = [
        sys.executable, "-m", "celery", "-A", "inference.worker", "worker",
        "-Q", queue, "--pool", "threads", "-c", str(threads), "-n", f"{name}@%h",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    return Worker(name, process, log)


def wait_ready(worker: Worker) -> None:
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while "ready." not in worker.log_text():
        assert worker.process.poll() is None, f"{worker.name} exited:\n{worker.log_text()}"
        assert time.monotonic() < deadline, f"{worker.name} not ready:\n{worker.log_text()}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def url(redis_url: str) -> str:
    url = db_url(redis_url)
    redis_lib.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="module")
def workers(url: str, tiny_model_dir: Path, tmp_path_factory) -> Iterator[list[Worker]]:
    log_dir = tmp_path_factory.mktemp("worker-logs")
    started = [start_worker(name, url, tiny_model_dir, log_dir) for name in ("w1", "w2")]
    try:
        for worker in started:
            wait_ready(worker)
        yield started
    finally:
        stop_workers(started)


def stop_workers(workers: list[Worker]) -> None:
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.terminate()
    for worker in workers:
        try:
            worker.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.process.kill()


def make_request(message_id: str, question: str = "Where is my order?", **fields: Any) -> dict:
    now = time.time()
    values: dict[str, Any] = {
        "conversation_id": f"conv-{message_id}",
        "message_id": message_id,
        "site_id": "site-1",
        "messages": build_messages("You are a shop's assistant.", [], [], question),
        "deadline": now + 30,
        "arrival": now,
        "max_new_tokens": 16,
        **fields,
    }
    return InferenceRequest(**values).to_dict()


class GroupWatcher:
    """Subscribes to a conversation's group the way the web consumer does."""

    def __init__(self, url: str, conversation_id: str) -> None:
        from channels_redis.core import RedisChannelLayer

        # redis-py 8 times out socket reads after 5 s by default, exactly channels_redis's
        # 5 s BZPOPMIN wait: an idle receive would fail spuriously. Read timeouts must exceed it.
        self.layer = RedisChannelLayer(hosts=[{"address": url, "socket_timeout": 30}])
        self.group = conversation_group(conversation_id)
        self.channel = ""
        self.events: list[dict[str, Any]] = []

    async def __aenter__(self) -> GroupWatcher:
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(self.group, self.channel)
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.layer.group_discard(self.group, self.channel)
        await self.layer.close_pools()

    async def until(self, predicate, timeout: float = 60.0) -> dict[str, Any]:
        """Collect events until one satisfies `predicate`; returns that event."""
        end = time.monotonic() + timeout
        while True:
            remaining = end - time.monotonic()
            assert remaining > 0, f"timed out; events so far: {self.events}"
            event = await asyncio.wait_for(self.layer.receive(self.channel), remaining)
            self.events.append(event)
            if predicate(event):
                return event

    async def final(self, timeout: float = 60.0) -> dict[str, Any]:
        return await self.until(lambda e: e["type"] in FINAL_TYPES, timeout)

    async def quiet_for(self, seconds: float) -> None:
        """Collect anything else that arrives within `seconds` (to prove nothing more comes)."""
        try:
            while True:
                event = await asyncio.wait_for(self.layer.receive(self.channel), seconds)
                self.events.append(event)
        except TimeoutError:
            return


def finalized(redis: redis_lib.Redis, message_id: str) -> list[dict[str, Any]]:
    """Finalize tasks waiting on the CPU queue for this message (Celery's Redis list)."""
    results = []
    for raw in redis.lrange(Queue.CPU.value, 0, -1):
        message = json.loads(raw)
        if message["headers"]["task"] != TaskName.FINALIZE_ANSWER.value:
            continue
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        if args[0]["message_id"] == message_id:
            results.append(args[0])
    return results


def send(client: Celery, payload: dict[str, Any], queue: str = Queue.INFERENCE.value) -> None:
    client.send_task(TaskName.GENERATE_ANSWER.value, args=[payload], queue=queue)


async def test_answer_streams_to_the_group_and_is_finalized(workers, client, redis, url) -> None:
    # given a customer's conversation group being watched
    payload = make_request("stream-1", grounding=["12:3", "40:1"])
    async with GroupWatcher(url, payload["conversation_id"]) as watcher:
        # when the chat layer sends the request
        send(client, payload)
        end = await watcher.final()
    # then: start, deltas, end; the deltas spell out the final text
    types = [e["type"] for e in watcher.events]
    assert types[0] == "answer.start" and types[-1] == "answer.end"
    assert set(types[1:-1]) == {"answer.delta"}
    result = end["result"]
    assert "".join(e["text"] for e in watcher.events[1:-1]) == result["text"] != ""
    assert result["finish_reason"] in {"length", "stop"} and result["completion_tokens"] <= 16
    assert result["ttft_ms"] > 0
    # the FAQ versions the prompt was grounded on come back for the cache's admission
    assert result["grounding"] == ["12:3", "40:1"]
    # and the result went to the CPU queue for persisting, once
    assert await_until(lambda: len(finalized(redis, "stream-1")) == 1)
    assert finalized(redis, "stream-1")[0] == result


def test_workers_publish_engine_figures_for_metrics(workers, redis) -> None:
    # the chat side's /metrics reads this hash (chatplatform/metrics.py)
    assert await_until(lambda: redis.exists("inference:stats"), timeout=5)
    stats = {k.decode(): float(v) for k, v in redis.hgetall("inference:stats").items()}
    assert set(stats) == {"batch_size", "tokens_per_s", "updated_at"}
    assert time.time() - stats["updated_at"] < 5
    assert stats["batch_size"] >= 0 and stats["tokens_per_s"] >= 0


@pytest.mark.parametrize(
    ("message_id", "fields", "code"),
    [
        ("bad-empty", {"messages": [PromptMessage("user", "   ")]}, "empty_prompt"),
        (
            "bad-long",
            {"messages": build_messages("rules " * 3000, [], [], "Where?")},
            "prompt_too_long",
        ),
        ("bad-site", {"site_id": ""}, "unknown_site"),
        ("bad-stale", {"deadline": time.time() - 3600}, "stale_request"),
    ],
)
async def test_bad_requests_are_refused_with_a_clear_code(
    workers, client, redis, url, message_id: str, fields: dict[str, Any], code: str
) -> None:
    question = fields.pop("question", "Where is my order?")
    payload = make_request(message_id, question, **fields)
    async with GroupWatcher(url, payload["conversation_id"]) as watcher:
        send(client, payload)
        refused = await watcher.final()
    assert refused["type"] == "answer.refused"
    assert refused["code"] == code and refused["message"]
    assert [e["type"] for e in watcher.events] == ["answer.refused"]
    assert await_until(lambda: len(finalized(redis, message_id)) == 1)


@pytest.mark.parametrize(
    ("message_id", "question"),
    [("long-emoji", "😀" * 2000), ("long-thai", ("สวัสดีครับ ผมต้องการคืนเงิน" * 11)[:269])],
)
async def test_longest_valid_messages_are_answered_with_the_grounding_shown(
    workers, client, redis, url, message_id: str, question: str
) -> None:
    # given messages the protocol accepts (<= 2,000 characters) that tokenize to more than
    # the prompt budget, with a site FAQ head the prompt cannot hold as well
    head = [FaqEntry(f"Head question {i}?", "Head answer. " * 20, f"{i}:1") for i in range(6)]
    messages = build_messages("You are a shop's assistant.", [], [], question, site_faqs=head)
    grounding = [e.ref for e in head]
    payload = make_request(message_id, messages=messages, grounding=grounding)
    async with GroupWatcher(url, payload["conversation_id"]) as watcher:
        send(client, payload)
        final = await watcher.final()
    # then they get an answer, not a refusal
    assert final["type"] == "answer.end", watcher.events
    result = final["result"]
    assert result["finish_reason"] in {"length", "stop"} and result["text"]
    # and the answer is grounded only on the FAQ entries the prompt still held
    assert set(result["grounding"]) < set(grounding)
    assert result["grounding"] == grounding[: len(result["grounding"])]


async def test_disconnected_customer_cancels_the_answer(workers, client, redis, url) -> None:
    payload = make_request("cancel-1", max_new_tokens=256)
    async with GroupWatcher(url, payload["conversation_id"]) as watcher:
        send(client, payload)
        await watcher.until(lambda e: e["type"] == "answer.delta")
        # when the chat layer marks the message cancelled
        redis.set(cancel_key("cancel-1"), "1", ex=60)
        end = await watcher.final()
    assert end["type"] == "answer.end"
    assert end["result"]["finish_reason"] == "cancelled"
    assert end["result"]["completion_tokens"] < 256


async def test_redelivered_request_is_answered_once(workers, client, redis, url) -> None:
    # given a request answered already
    payload = make_request("twice-1")
    async with GroupWatcher(url, payload["conversation_id"]) as watcher:
        send(client, payload)
        await watcher.final()
        # when Redis delivers the same task again
        send(client, payload)
        await watcher.quiet_for(3.0)
    # then nothing more is streamed and it is finalized once
    assert [e["type"] for e in watcher.events].count("answer.end") == 1
    assert [e["type"] for e in watcher.events].count("answer.start") == 1
    assert len(finalized(redis, "twice-1")) == 1


async def test_a_conclusion_whose_worker_died_before_queuing_its_finalize_is_finalized(
    workers, client, redis, url
) -> None:
    # given an answer a worker concluded (it won the answered key, which holds the finalize
    # payload) and then died before its finalize task was queued (seen in the chaos test:
    # the customer had the answer, the database row stayed pending)
    payload = make_request("died-before-finalize")
    concluded = {"message_id": "died-before-finalize", "text": "Here it is.", "finish": "length"}
    redis.set(answered_key("died-before-finalize"), json.dumps(concluded), ex=60)
    async with GroupWatcher(url, payload["conversation_id"]) as watcher:
        # when its task is delivered again
        send(client, payload)
        assert await_until(lambda: finalized(redis, "died-before-finalize"), 30)
        await watcher.quiet_for(1.0)
    # then nothing is generated or streamed again, and its finalize is queued with the payload
    # (a second finalize of a stored answer would change nothing: tests/chat/test_finalize.py)
    assert watcher.events == []
    assert finalized(redis, "died-before-finalize") == [concluded]


async def test_a_message_the_chat_layer_closed_is_not_finalized_by_a_worker(
    workers, client, redis, url
) -> None:
    # given a message the chat layer closed after its answer timeout (no payload in the key)
    payload = make_request("closed-by-chat")
    redis.set(answered_key("closed-by-chat"), "timeout", ex=60)
    # when its task is delivered
    send(client, payload)
    busy = None
    for _ in range(300):
        busy = next(
            (w for w in workers if "message closed-by-chat: duplicate" in w.log_text()), None
        )
        if busy is not None:
            break
        time.sleep(0.1)
    # then the worker drops it: no finalize is queued
    assert busy is not None
    assert finalized(redis, "closed-by-chat") == []


async def test_worker_killed_mid_answer_still_answers_once(workers, client, redis, url) -> None:
    # given a long answer streaming from one of the two workers
    payload = make_request("killed-1", max_new_tokens=256)
    async with GroupWatcher(url, payload["conversation_id"]) as watcher:
        send(client, payload)
        await watcher.until(lambda e: e["type"] == "answer.delta")
        busy = next(w for w in workers if "message killed-1: received" in w.log_text())
        # when that worker dies without a chance to clean up
        os.kill(busy.process.pid, signal.SIGKILL)
        busy.process.wait(timeout=10)
        # then the task is redelivered to the other worker and the answer arrives, once
        end = await watcher.final(timeout=redelivery_within_s(VISIBILITY_TIMEOUT_S) + 60)
        await watcher.quiet_for(VISIBILITY_TIMEOUT_S + 2.0)
    assert end["type"] == "answer.end"
    assert end["result"]["finish_reason"] == "length"
    assert [e["type"] for e in watcher.events].count("answer.end") == 1
    assert [e["type"] for e in watcher.events].count("answer.start") == 2  # restarted once
    survivor = next(w for w in workers if w is not busy)
    assert "message killed-1: received" in survivor.log_text()
    assert len(finalized(redis, "killed-1")) == 1


def await_until(condition, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()
