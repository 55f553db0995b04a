"""Admission under overload: shed what cannot be served in time, hand back what another worker
can start sooner. The decisions are pure functions (unit-tested); `Fleet` reads their inputs
from Redis.

Every inference worker publishes its capacity (slots, running, waiting, mean service time)
in a hash of its own that expires when the worker dies. From those and the length of the
Celery queue in Redis, anyone can estimate when a new request would get a running slot:

- the chat layer, before queueing a question: beyond `shed_after_s` the customer is told at
  once that the assistant is too busy, instead of the request waiting in Redis until the
  answer timeout (`should_shed`);
- a worker, when it takes a task: a request it cannot start before its deadline while another
  worker has a free slot goes back to the queue once, instead of being hoarded in this
  worker's waiting line (`worker_decision`); one that has already waited past `shed_after_s`
  (in Redis or here) is refused as overloaded.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

logger = logging.getLogger(__name__)

CAPACITY_PREFIX = "inference:capacity:"
CAPACITY_TTL_S = 5  # a worker's report outlives a missed second or two, not its death
FLEET_CACHE_S = 0.5  # one Redis read per half second is plenty for admission
HANDED_BACK_TTL_S = 600
# Beyond this wait for a running slot a request is shed: the chat layer's answer timeout is
# 60 s by default and an answer takes seconds once started, so 30 s leaves it time to stream.
DEFAULT_SHED_AFTER_S = 30.0
OVERLOADED_MESSAGE = (
    "Our assistant is very busy right now and cannot take this question. Please try again in "
    "a minute, or ask to talk to a human."
)
# Celery's Redis transport keeps a queue's waiting messages in these lists (priority steps).
QUEUE_PRIORITY_SUFFIXES = ["", "\x06\x163", "\x06\x166", "\x06\x169"]


def capacity_key(worker: str) -> str:
    return f"{CAPACITY_PREFIX}{worker}"


def handed_back_key(message_id: str) -> str:
    return f"inference:handed-back:{message_id}"


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class WorkerCapacity:
    worker: str
    max_running: int
    running: int
    waiting: int
    service_s: float  # mean admission-to-last-token time of one request

    @property
    def free_slots(self) -> int:
        return max(self.max_running - self.running - self.waiting, 0)

    def as_mapping(self) -> dict[str, Any]:
        return {
            "max_running": self.max_running,
            "running": self.running,
            "waiting": self.waiting,
            "service_s": round(self.service_s, 4),
        }

    @classmethod
    def from_mapping(cls, worker: str, raw: dict[str, str]) -> WorkerCapacity:
        return cls(
            worker=worker,
            max_running=int(raw["max_running"]),
            running=int(raw["running"]),
            waiting=int(raw["waiting"]),
            service_s=float(raw["service_s"]),
        )


def fleet_start_delay_s(backlog: int, workers: list[WorkerCapacity]) -> float | None:
    """Seconds until a request queued now behind `backlog` others gets a running slot.

    All slots of all workers turn over every `service_s` on average; the request waits for
    everything queued or waiting ahead of it beyond the free slots. None: no worker reports.
    """
    slots = sum(w.max_running for w in workers)
    if slots == 0:
        return None
    occupied = sum(w.running + w.waiting for w in workers)
    ahead = backlog + occupied - slots
    if ahead < 0:
        return 0.0
    service_s = sum(w.service_s * w.max_running for w in workers) / slots
    return (ahead + 1) * service_s / slots


def should_shed(backlog: int, workers: list[WorkerCapacity], shed_after_s: float) -> bool:
    """Chat layer: refuse a new question now when it would wait longer than `shed_after_s`."""
    delay = fleet_start_delay_s(backlog, workers)
    return delay is not None and delay > shed_after_s


class Action(StrEnum):
    ADMIT = "admit"
    HAND_BACK = "hand_back"  # another worker can start it sooner: back to the queue, once
    SHED = "shed"  # it would start too late to be of use: refuse as overloaded


def worker_decision(
    *,
    now: float,
    arrival: float,
    deadline: float,
    local_start_s: float,
    others: list[WorkerCapacity],
    handed_back_before: bool,
    shed_after_s: float,
) -> Action:
    """What a worker does with a task it just took (`local_start_s`: its own engine's wait)."""
    start = now + local_start_s
    if start - arrival > shed_after_s:
        if not handed_back_before and any(w.free_slots for w in others):
            return Action.HAND_BACK
        return Action.SHED
    if start > deadline and not handed_back_before and any(w.free_slots for w in others):
        return Action.HAND_BACK
    return Action.ADMIT


class Fleet:
    """Reads the workers' capacity reports and the queue backlog from Redis (briefly cached)."""

    def __init__(self, client: Any, queue: str, own_worker: str | None = None) -> None:
        self.client = client
        self.queue = queue
        self.own_worker = own_worker
        self._read_at = -FLEET_CACHE_S
        self._workers: list[WorkerCapacity] = []
        self._backlog = 0

    def read(self) -> tuple[int, list[WorkerCapacity]]:
        """(messages waiting in the queue, live workers' capacity), at most FLEET_CACHE_S old."""
        if time.monotonic() - self._read_at < FLEET_CACHE_S:
            return self._backlog, self._workers
        keys = [k.decode() for k in self.client.scan_iter(match=f"{CAPACITY_PREFIX}*", count=100)]
        pipe = self.client.pipeline(transaction=False)
        for suffix in QUEUE_PRIORITY_SUFFIXES:
            pipe.llen(f"{self.queue}{suffix}")
        for key in keys:
            pipe.hgetall(key)
        replies = pipe.execute()
        backlog = sum(replies[: len(QUEUE_PRIORITY_SUFFIXES)])
        workers = []
        for key, raw in zip(keys, replies[len(QUEUE_PRIORITY_SUFFIXES) :], strict=True):
            try:
                fields = {k.decode(): v.decode() for k, v in raw.items()}
                workers.append(WorkerCapacity.from_mapping(key[len(CAPACITY_PREFIX) :], fields))
            except (KeyError, ValueError):
                continue  # expired between SCAN and HGETALL, or half written
        self._read_at, self._backlog, self._workers = time.monotonic(), backlog, workers
        return backlog, workers

    def others(self) -> list[WorkerCapacity]:
        return [w for w in self.read()[1] if w.worker != self.own_worker]

    def publish(self, capacity: WorkerCapacity) -> None:
        key = capacity_key(capacity.worker)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key, mapping=capacity.as_mapping())
        pipe.expire(key, CAPACITY_TTL_S)
        pipe.execute()
