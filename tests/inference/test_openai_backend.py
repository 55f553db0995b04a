"""The `openai` back end against a real OpenAI-compatible server: vLLM's CPU build serving the
offline model, real Celery inference workers (INFERENCE_BACKEND=openai), real Redis and the
real channel layer. Faults come from the server itself (killed and restarted mid-stream) or
from `tests/fault_proxy.py`, a real HTTP proxy in front of it.

Two groups of workers, each on its own Redis database so that they never take each other's
requests: two workers talking to vLLM directly (answers, cancellation, the server killed and
restarted, a worker killed mid-answer), and one behind the fault proxy.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from celery import Celery

from embedded_redis import free_port
from inference.contracts import cancel_key
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
from tests.openai_server import SERVED_MODEL, FaultProxyProcess, VLLMServer

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

REPO = Path(__file__).resolve().parents[2]
DIRECT_DB, PROXIED_DB = 8, 9
# Short, so the killed-worker test sees the redelivery soon (the production default is 20 s).
VISIBILITY_TIMEOUT_S = 4
# Long enough for answers that are still streaming when they are cancelled or cut.
MAX_NEW_TOKENS = 2000
# The direct workers' retry window outlasts a vLLM restart (~35-60 s on 2 shared cores).
RESTART_RETRY_WINDOW_S = 180
PROXIED_STALL_TIMEOUT_S = 3
# Still streaming when the server is killed right after every first token, four at a time.
RESTART_ANSWER_TOKENS = 1000


def db_url(redis_url: str, db: int) -> str:
    return redis_url.rsplit("/", 1)[0] + f"/{db}"


def start_openai_worker(
    name: str, url: str, base_url: str, log_dir: Path, **settings: str
) -> Worker:
    """An inference worker with INFERENCE_BACKEND=openai (it loads no model)."""
    openai_settings = {
        "INFERENCE_BACKEND": "openai",
        "INFERENCE_OPENAI_BASE_URL": base_url,
        "INFERENCE_OPENAI_MODEL": SERVED_MODEL,
        "INFERENCE_OPENAI_API_KEY": "",
        "INFERENCE_MAX_NEW_TOKENS": str(MAX_NEW_TOKENS),
        "INFERENCE_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT_S),
    }
    return start_worker(name, url, Path("unused"), log_dir, **{**openai_settings, **settings})


@pytest.fixture(scope="module")
def direct_url(redis_url: str) -> str:
    url = db_url(redis_url, DIRECT_DB)
    redis_lib.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="module")
def proxied_url(redis_url: str) -> str:
    url = db_url(redis_url, PROXIED_DB)
    redis_lib.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="module")
def direct_workers(
    vllm_server: VLLMServer, direct_url: str, tmp_path_factory
) -> Iterator[list[Worker]]:
    log_dir = tmp_path_factory.mktemp("openai-workers")
    settings = {"INFERENCE_OPENAI_RETRY_WINDOW_S": str(RESTART_RETRY_WINDOW_S)}
    workers = [
        start_openai_worker(name, direct_url, vllm_server.base_url, log_dir, **settings)
        for name in ("direct1", "direct2")
    ]
    try:
        for worker in workers:
            wait_ready(worker)
        yield workers
    finally:
        stop_workers(workers)


@pytest.fixture(scope="module")
def proxy(vllm_server: VLLMServer, tmp_path_factory) -> Iterator[FaultProxyProcess]:
    log = tmp_path_factory.mktemp("fault-proxy") / "proxy.log"
    process = FaultProxyProcess(vllm_server, free_port(), log)
    try:
        process.start()
        yield process
    finally:
        process.kill()


@pytest.fixture(scope="module")
def proxied_worker(
    proxy: FaultProxyProcess, proxied_url: str, tmp_path_factory
) -> Iterator[Worker]:
    log_dir = tmp_path_factory.mktemp("openai-proxied-worker")
    settings = {"INFERENCE_OPENAI_STALL_TIMEOUT_S": str(PROXIED_STALL_TIMEOUT_S)}
    worker = start_openai_worker("proxied", proxied_url, proxy.base_url, log_dir, **settings)
    try:
        wait_ready(worker)
        yield worker
    finally:
        stop_workers([worker])


@pytest.fixture(autouse=True)
def _no_faults_left(request: pytest.FixtureRequest) -> None:
    if "proxy" in request.fixturenames:
        request.getfixturevalue("proxy").reset()


def celery_client(url: str) -> Celery:
    return Celery("openai-backend-tests", broker=url)


def types_of(watcher: GroupWatcher) -> list[str]:
    return [event["type"] for event in watcher.events]


def text_after_last_start(watcher: GroupWatcher) -> str:
    """The text streamed by the last attempt (a restart drops what came before it)."""
    types = types_of(watcher)
    last_start = len(types) - 1 - types[::-1].index("answer.start")
    return "".join(e["text"] for e in watcher.events[last_start:] if e["type"] == "answer.delta")


# --------------------------------------------------------------------------- answers


async def test_answer_streams_from_the_server_and_is_finalized(
    direct_workers, vllm_server: VLLMServer, direct_url: str
) -> None:
    # given a customer's conversation group being watched
    redis = redis_lib.Redis.from_url(direct_url)
    before = vllm_server.metrics()
    payload = make_request("oa-stream-1", grounding=["12:3", "40:1"], max_new_tokens=24)
    async with GroupWatcher(direct_url, payload["conversation_id"]) as watcher:
        # when the chat layer sends the request
        send(celery_client(direct_url), payload)
        end = await watcher.final()
    # then the server's answer streams: start, deltas, end; the deltas spell out the text
    types = types_of(watcher)
    assert types[0] == "answer.start" and types[-1] == "answer.end"
    assert set(types[1:-1]) == {"answer.delta"}
    result = end["result"]
    assert "".join(e["text"] for e in watcher.events[1:-1]) == result["text"] != ""
    assert result["finish_reason"] in {"length", "stop"}
    # token counts are the server's own (its usage chunk), as its metrics count them
    after = vllm_server.metrics()
    assert (
        result["prompt_tokens"]
        == after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"]
    )
    assert 0 < result["completion_tokens"] <= 24
    assert result["ttft_ms"] > 0 and result["total_ms"] >= result["ttft_ms"]
    assert result["grounding"] == ["12:3", "40:1"]
    # and it went to the CPU queue for persisting, once
    assert await_until(lambda: len(finalized(redis, "oa-stream-1")) == 1)
    assert finalized(redis, "oa-stream-1")[0] == result


def test_workers_publish_tokens_per_second_for_metrics(direct_workers, direct_url: str) -> None:
    redis = redis_lib.Redis.from_url(direct_url)
    assert await_until(lambda: redis.exists("inference:stats"), timeout=5)
    stats = {k.decode(): float(v) for k, v in redis.hgetall("inference:stats").items()}
    assert set(stats) == {"batch_size", "tokens_per_s", "updated_at"}
    assert time.time() - stats["updated_at"] < 5


async def test_cancelled_answer_stops_the_servers_generation(
    direct_workers, vllm_server: VLLMServer, direct_url: str
) -> None:
    # given a long answer streaming from the server
    redis = redis_lib.Redis.from_url(direct_url)
    payload = make_request("oa-cancel-1", max_new_tokens=MAX_NEW_TOKENS)
    async with GroupWatcher(direct_url, payload["conversation_id"]) as watcher:
        send(celery_client(direct_url), payload)
        await watcher.until(lambda e: e["type"] == "answer.delta")
        assert vllm_server.metrics()["vllm:num_requests_running"] == 1
        # when the chat layer marks the message cancelled (the customer went away)
        redis.set(cancel_key("oa-cancel-1"), "1", ex=60)
        end = await watcher.final()
    assert end["result"]["finish_reason"] == "cancelled"
    # then the server stopped generating it: nothing running, its token counter stands still
    # far below the answer's length (greedy decoding of the offline model never ends early)
    assert await_until(lambda: vllm_server.metrics()["vllm:num_requests_running"] == 0, 5)
    generated = vllm_server.metrics()["vllm:generation_tokens_total"]
    time.sleep(1.0)
    assert vllm_server.metrics()["vllm:generation_tokens_total"] == generated
    assert end["result"]["completion_tokens"] < MAX_NEW_TOKENS
    assert await_until(lambda: len(finalized(redis, "oa-cancel-1")) == 1)


async def test_server_killed_mid_stream_and_restarted_loses_and_doubles_nothing(
    direct_workers, vllm_server: VLLMServer, direct_url: str
) -> None:
    # given four answers streaming from the server at once
    redis = redis_lib.Redis.from_url(direct_url)
    ids = [f"oa-restart-{index}" for index in range(4)]
    payloads = [make_request(i, max_new_tokens=RESTART_ANSWER_TOKENS) for i in ids]
    watchers = [GroupWatcher(direct_url, p["conversation_id"]) for p in payloads]
    for watcher in watchers:
        await watcher.__aenter__()
    try:
        for payload in payloads:
            send(celery_client(direct_url), payload)
        # (read concurrently: a channel left unread drops messages past its capacity)
        await asyncio.gather(*[w.until(lambda e: e["type"] == "answer.delta") for w in watchers])
        # when the server dies (SIGKILL: no goodbye on its streams) and comes back
        vllm_server.kill()
        cut = [not any(e["type"] == "answer.end" for e in w.events) for w in watchers]
        ends = asyncio.gather(*[w.final(timeout=RESTART_RETRY_WINDOW_S) for w in watchers])
        await asyncio.to_thread(vllm_server.start)
        ends = await ends
        await asyncio.gather(*[w.quiet_for(3.0) for w in watchers])
    finally:
        for watcher in watchers:
            await watcher.__aexit__()
    # then every answer arrives exactly once; those the kill cut were streamed anew after a
    # second answer.start
    assert any(cut), "every answer had ended before the kill: nothing was tested"
    for end, watcher, message_id, was_cut in zip(ends, watchers, ids, cut, strict=True):
        types = types_of(watcher)
        assert end["type"] == "answer.end", watcher.events[-3:]
        assert types.count("answer.end") == 1
        assert types.count("answer.start") >= (2 if was_cut else 1)
        assert end["result"]["finish_reason"] in {"length", "stop"}
        assert text_after_last_start(watcher) == end["result"]["text"]
        assert await_until(lambda m=message_id: len(finalized(redis, m)) == 1)
    logs = "".join(worker.log_text() for worker in direct_workers)
    assert "unreachable" in logs  # the retries met a refused connection while it was down


async def test_worker_killed_mid_answer_is_answered_once_by_another(
    direct_workers, direct_url: str
) -> None:
    # given a long answer streaming through one of the two workers
    redis = redis_lib.Redis.from_url(direct_url)
    payload = make_request("oa-killed-1", max_new_tokens=MAX_NEW_TOKENS)
    async with GroupWatcher(direct_url, payload["conversation_id"]) as watcher:
        send(celery_client(direct_url), payload)
        await watcher.until(lambda e: e["type"] == "answer.delta")
        busy = next(w for w in direct_workers if "message oa-killed-1: received" in w.log_text())
        # when that worker dies without a chance to clean up
        os.kill(busy.process.pid, signal.SIGKILL)
        busy.process.wait(timeout=10)
        # then the other worker takes the redelivered task over the lease and answers, once
        end = await watcher.final(timeout=120)
        await watcher.quiet_for(VISIBILITY_TIMEOUT_S + 2.0)
    assert end["type"] == "answer.end"
    assert types_of(watcher).count("answer.end") == 1
    survivor = next(w for w in direct_workers if w is not busy)
    assert "message oa-killed-1: received" in survivor.log_text()
    assert len(finalized(redis, "oa-killed-1")) == 1


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("name", "fault"),
    [
        ("rate-limited", {"kind": "status", "status": 429, "retry_after": "1"}),
        ("server-error", {"kind": "status", "status": 500}),
        ("unavailable", {"kind": "status", "status": 503}),
        ("cut", {"kind": "cut", "after": 3}),
        ("malformed", {"kind": "malformed", "after": 3}),
        ("stalled", {"kind": "stall", "seconds": PROXIED_STALL_TIMEOUT_S + 3}),
    ],
)
async def test_a_fault_is_retried_and_answered_once(
    proxied_worker, proxy: FaultProxyProcess, proxied_url: str, name: str, fault: dict
) -> None:
    # given the server fails the first call this way
    redis = redis_lib.Redis.from_url(proxied_url)
    message_id = f"oa-fault-{name}"
    proxy.inject(fault)
    payload = make_request(message_id, max_new_tokens=24)
    started = time.monotonic()
    async with GroupWatcher(proxied_url, payload["conversation_id"]) as watcher:
        send(celery_client(proxied_url), payload)
        end = await watcher.final()
        await watcher.quiet_for(1.0)
    # then a second call answers it, once, and its text is the second call's whole stream
    calls = proxy.calls()
    assert [call["fault"] for call in calls] == [fault["kind"], None]
    assert end["type"] == "answer.end" and types_of(watcher).count("answer.end") == 1
    assert end["result"]["finish_reason"] in {"length", "stop"}
    assert text_after_last_start(watcher) == end["result"]["text"] != ""
    assert await_until(lambda: len(finalized(redis, message_id)) == 1)
    if name == "rate-limited":  # the Retry-After was honoured
        assert time.monotonic() - started >= 1.0
    if name == "stalled":  # the stuck call was given up, which closed it at the server
        assert calls[0]["client_gone"] is True


async def test_slow_first_token_past_the_deadline_sends_answer_delayed(
    proxied_worker, proxy: FaultProxyProcess, proxied_url: str
) -> None:
    # given a server whose first token comes after the deadline (but within the stall timeout)
    proxy.inject({"kind": "stall", "seconds": 1.5})
    now = time.time()
    payload = make_request("oa-slow-1", max_new_tokens=8, deadline=now + 0.3, arrival=now)
    async with GroupWatcher(proxied_url, payload["conversation_id"]) as watcher:
        send(celery_client(proxied_url), payload)
        end = await watcher.final()
    # then the chat layer is told at once (holding reply) and the answer still follows
    types = types_of(watcher)
    assert types.index("answer.delayed") < types.index("answer.delta")
    assert end["type"] == "answer.end" and end["result"]["ttft_ms"] > 1000
    assert len(proxy.calls()) == 1


async def test_faults_past_the_retry_window_end_in_the_chat_error(
    proxied_worker, proxy: FaultProxyProcess, proxied_url: str
) -> None:
    # given a request whose retry window (30 s from the customer's message) ends in ~2 s, and
    # a server that keeps failing
    redis = redis_lib.Redis.from_url(proxied_url)
    proxy.inject(*[{"kind": "status", "status": 503}] * 50)
    arrival = time.time() - 28
    payload = make_request("oa-gives-up-1", arrival=arrival, deadline=arrival + 0.3)
    async with GroupWatcher(proxied_url, payload["conversation_id"]) as watcher:
        send(celery_client(proxied_url), payload)
        error = await watcher.final(timeout=30)
    # then the customer gets the documented error, once, and the result is finalized as such
    assert error["type"] == "answer.error" and error["code"] == "generation_failed"
    assert time.time() - arrival < 32
    assert await_until(lambda: len(finalized(redis, "oa-gives-up-1")) == 1)
    assert finalized(redis, "oa-gives-up-1")[0]["finish_reason"] == "error"


@pytest.mark.parametrize(
    ("name", "fault"),
    [
        ("bad-request", {"kind": "status", "status": 400}),
        ("retry-after-too-late", {"kind": "status", "status": 429, "retry_after": "600"}),
    ],
)
async def test_a_fault_that_cannot_pass_in_time_fails_at_once(
    proxied_worker, proxy: FaultProxyProcess, proxied_url: str, name: str, fault: dict
) -> None:
    proxy.inject(fault)
    payload = make_request(f"oa-fails-{name}")
    started = time.monotonic()
    async with GroupWatcher(proxied_url, payload["conversation_id"]) as watcher:
        send(celery_client(proxied_url), payload)
        error = await watcher.final()
    assert error["type"] == "answer.error" and error["code"] == "generation_failed"
    assert time.monotonic() - started < 5  # no waiting for what cannot help
    assert len(proxy.calls()) == 1


async def test_server_down_when_the_worker_starts_is_waited_for(
    vllm_server: VLLMServer, redis_url: str, tmp_path: Path
) -> None:
    # given a worker started while nothing listens at its server's address (connections are
    # refused): it starts anyway, saying so
    url = db_url(redis_url, 11)
    redis_lib.Redis.from_url(url).flushdb()
    port = free_port()
    worker = start_openai_worker("early", url, f"http://127.0.0.1:{port}/v1", tmp_path)
    proxy = FaultProxyProcess(vllm_server, port, tmp_path / "late-proxy.log")
    try:
        wait_ready(worker)
        assert "not reachable yet" in worker.log_text()
        payload = make_request("oa-down-at-start-1", max_new_tokens=8)
        async with GroupWatcher(url, payload["conversation_id"]) as watcher:
            # when a request comes while the server is still down, and then the server is up
            send(celery_client(url), payload)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(proxy.start)
            end = await watcher.final()
            await watcher.quiet_for(1.0)
    finally:
        proxy.kill()
        stop_workers([worker])
    # then it is answered, once, after retries that met refused connections
    assert end["type"] == "answer.end" and types_of(watcher).count("answer.end") == 1
    assert "unreachable" in worker.log_text()
    assert len(finalized(redis_lib.Redis.from_url(url), "oa-down-at-start-1")) == 1


# --------------------------------------------------------------------------- start-up


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"INFERENCE_OPENAI_MODEL": "no-such-model"}, "INFERENCE_OPENAI_MODEL='no-such-model'"),
        ({"INFERENCE_BACKEND": "vllm"}, "INFERENCE_BACKEND='vllm'"),
    ],
)
def test_a_bad_setting_stops_the_worker_naming_it(
    vllm_server: VLLMServer, redis_url: str, tmp_path: Path, settings: dict, named: str
) -> None:
    worker = start_openai_worker(
        "bad", db_url(redis_url, 10), vllm_server.base_url, tmp_path, **settings
    )
    try:
        worker.process.wait(timeout=120)
    finally:
        stop_workers([worker])
    assert worker.process.returncode != 0
    assert named in worker.log_text()
