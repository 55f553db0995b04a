"""The inference app's broker bookkeeping on the real Redis: its short redelivery timeout must
apply to inference tasks only, never to the CPU worker's tasks that share the database."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import redis as redis_lib

from chatplatform.celery_app import app as cpu_app
from inference.worker import VISIBILITY_TIMEOUT_S
from inference.worker import app as inference_app

HELD_FOR_S = VISIBILITY_TIMEOUT_S * 5  # long past the inference timeout
# Queues no worker of the test session consumes, so a restored delivery stays visible.
CPU_QUEUE = "test-broker-keys-cpu"
INFERENCE_QUEUE = "test-broker-keys-inference"
SWEEPS = 20  # a live worker's sweep may hold kombu's mutex for a moment: sweep a few times


def hold_unacked(client: redis_lib.Redis, keys: tuple[str, str], tag: str, queue: str) -> None:
    """Record a delivery as kombu does while a worker runs it (acks_late): hash + index."""
    unacked_key, index_key = keys
    payload = {"body": "{}", "properties": {"delivery_tag": tag}}
    client.hset(unacked_key, tag, json.dumps([payload, "", queue]))
    client.zadd(index_key, {tag: time.time() - HELD_FOR_S})


def sweep_as_the_inference_worker(until: Callable[[], bool]) -> None:
    with inference_app.connection_for_write() as connection:
        for _ in range(SWEEPS):
            connection.default_channel.qos.restore_visible(num=100, interval=1)
            if until():
                return
            time.sleep(0.05)


def test_the_inference_sweep_leaves_a_long_cpu_task_alone(redis_client: redis_lib.Redis) -> None:
    # given a CPU-queue task that the CPU worker has been running for a long time
    with cpu_app.connection_for_write() as connection:
        channel = connection.default_channel
        cpu_keys = (channel.unacked_key, channel.unacked_index_key)
    hold_unacked(redis_client, cpu_keys, "cpu-task", CPU_QUEUE)
    # when the inference worker sweeps for abandoned deliveries (every time it can)
    sweep_as_the_inference_worker(until=lambda: False)
    # then the CPU task is neither re-queued nor forgotten
    assert redis_client.llen(CPU_QUEUE) == 0
    assert redis_client.hexists(cpu_keys[0], "cpu-task")


def test_the_inference_sweep_redelivers_an_abandoned_inference_task(
    redis_client: redis_lib.Redis,
) -> None:
    # given an inference task whose worker died (unacknowledged past the timeout)
    with inference_app.connection_for_write() as connection:
        channel = connection.default_channel
        inference_keys = (channel.unacked_key, channel.unacked_index_key)
    hold_unacked(redis_client, inference_keys, "inference-task", INFERENCE_QUEUE)
    # when the inference worker sweeps, it goes back on its queue
    sweep_as_the_inference_worker(until=lambda: redis_client.llen(INFERENCE_QUEUE) > 0)
    assert redis_client.llen(INFERENCE_QUEUE) == 1
    assert not redis_client.hexists(inference_keys[0], "inference-task")
