"""The inference app's broker bookkeeping on the real Redis: its short redelivery timeout must
apply to inference tasks only, never to the CPU worker's tasks that share the database."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import redis as redis_lib
from celery import Celery

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


def sweep_as(app: Celery, until: Callable[[], bool]) -> None:
    """Sweep for abandoned deliveries as a worker of `app` does, until `until()` holds."""
    with app.connection_for_write() as connection:
        for _ in range(SWEEPS):
            connection.default_channel.qos.restore_visible(num=100, interval=1)
            if until():
                return
            time.sleep(0.05)


def sweep_as_the_inference_worker(until: Callable[[], bool]) -> None:
    sweep_as(inference_app, until)


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


RENEW_QUEUE = "test-broker-renewal"


def test_a_delivery_the_worker_still_holds_is_renewed_not_redelivered(
    redis_client: redis_lib.Redis,
) -> None:
    # given a task this worker received and still runs, long past the visibility timeout
    with inference_app.connection_for_write() as connection:
        channel = connection.default_channel
        connection.SimpleQueue(RENEW_QUEUE).put({"long": "task"})
        held = channel.basic_get(RENEW_QUEUE, no_ack=False)
        assert held is not None
        tag = held.delivery_tag
        redis_client.zadd(channel.unacked_index_key, {tag: time.time() - HELD_FOR_S})
        # and the delivery of a worker that died, just as old
        hold_unacked(
            redis_client,
            (channel.unacked_key, channel.unacked_index_key),
            "dead-worker-task",
            INFERENCE_QUEUE,
        )
        # when the worker sweeps
        channel.qos.restore_visible(num=100, interval=1)
        # then its own task stays where it is, renewed; the dead worker's comes back
        assert redis_client.llen(RENEW_QUEUE) == 0
        assert redis_client.hexists(channel.unacked_key, tag)
        assert redis_client.zscore(channel.unacked_index_key, tag) > time.time() - 5
        assert redis_client.llen(INFERENCE_QUEUE) == 1
        # and once acknowledged, renewal does not bring it back
        held.ack()
        channel.qos._flush()
        channel.qos.restore_visible(num=100, interval=1)
        assert redis_client.zscore(channel.unacked_index_key, tag) is None


def test_an_ack_after_the_connection_was_replaced_does_not_raise(
    redis_client: redis_lib.Redis,
) -> None:
    # given a task received on a connection that was then lost and closed (as the worker's
    # consumer does on a Redis restart) while the task kept running
    with inference_app.connection_for_write() as connection:
        channel = connection.default_channel
        connection.SimpleQueue(RENEW_QUEUE).put({"running": "task"})
        held = channel.basic_get(RENEW_QUEUE, no_ack=False)
        connection.collect()
        connection.close()
    # when the task finishes and acknowledges it: no AttributeError (it stopped the worker)
    held.ack()
    # then the delivery stays in Redis, for the sweep to bring back and be found done
    assert redis_client.hexists("inference_unacked", held.delivery_tag)


def test_a_dead_cpu_workers_task_comes_back_within_its_visibility_timeout(
    redis_client: redis_lib.Redis,
) -> None:
    # given a finalize task whose CPU worker was killed mid-way, a little over 30 s ago
    from django.conf import settings

    with cpu_app.connection_for_write() as connection:
        channel = connection.default_channel
        keys = (channel.unacked_key, channel.unacked_index_key)
        hold_unacked(redis_client, keys, "killed-finalize", CPU_QUEUE)
        redis_client.zadd(
            keys[1], {"killed-finalize": time.time() - settings.CPU_VISIBILITY_TIMEOUT_S - 1}
        )
    # when a CPU worker sweeps (kombu's default timeout was an hour: it stayed put)
    sweep_as(cpu_app, until=lambda: redis_client.llen(CPU_QUEUE) > 0)
    # then it is back on its queue for another worker
    assert redis_client.llen(CPU_QUEUE) == 1
    assert settings.CPU_VISIBILITY_TIMEOUT_S <= 60
