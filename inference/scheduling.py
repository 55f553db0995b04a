"""SLA-aware admission: the waiting queue's order and time-to-first-token estimates.

Pure logic (no model, no threads), shared by both engines and unit-tested directly.

Order under overload (`LatePolicy.YIELD`, the default): requests that can still make their
deadline go first, earliest deadline first; requests that are already late (the deadline
passed, or the engine flagged them and the customer got a holding reply) come after them,
oldest first. Plain earliest-deadline-first (`LatePolicy.EDF`, kept for the benchmark's
comparison) serves the already-late requests first exactly because their deadlines are the
earliest, so under overload every request ends up late: lateness spreads instead of staying
with the requests that were lost anyway.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

T = TypeVar("T")

# Exponential moving average weight of a new measurement: recent enough to follow load changes
# within a second of decode steps, smooth enough that one slow step does not swing admission.
EMA_WEIGHT = 0.1


class LatePolicy(StrEnum):
    YIELD = "yield"  # late requests wait behind those that can still make their deadline
    EDF = "edf"  # plain earliest deadline first (late requests first: the baseline)


@dataclass
class StepCosts:
    """Measured engine costs, as moving averages. Seeded by warm-up, refined by every step."""

    decode_step_s: float = 0.02  # one decode step of the running batch
    prefill_token_s: float = 0.0005  # prefill cost per prompt token
    service_s: float = 1.0  # admission to last token of one request
    # Names of the costs measured at least once: the first measurement replaces the guessed
    # default instead of being averaged with it (a default 2x off would take ~7 requests to fade).
    measured: set[str] = field(default_factory=set)

    def _observe(self, name: str, value: float) -> None:
        if name not in self.measured:
            self.measured.add(name)
            setattr(self, name, value)
            return
        current = getattr(self, name)
        setattr(self, name, current + EMA_WEIGHT * (value - current))

    def observe_decode_step(self, seconds: float) -> None:
        self._observe("decode_step_s", seconds)

    def observe_prefill(self, prompt_tokens: int, seconds: float) -> None:
        """Admission to first token for `prompt_tokens` prefilled tokens. The step's own cost
        (the running requests' decode) is taken out first: with prefix sharing only a few
        dozen tokens may be prefilled, and a per-token figure that carried the whole step
        would overcharge every long prompt after it."""
        per_token = max(seconds - self.decode_step_s, 0.0) / max(prompt_tokens, 1)
        self._observe("prefill_token_s", per_token)

    def observe_service(self, seconds: float) -> None:
        self._observe("service_s", seconds)


def first_token_s(costs: StepCosts, uncached_prompt_tokens: int) -> float:
    """Seconds from admission to the first token: the prefill of the prompt tokens the KV cache
    does not already hold, within one step."""
    return costs.decode_step_s + uncached_prompt_tokens * costs.prefill_token_s


def start_delay_s(costs: StepCosts, waiting_ahead: int, running: int, max_running: int) -> float:
    """Seconds from now until a new request is admitted (gets a running slot).

    `waiting_ahead` requests are admitted before it. If a running slot is free for it, it
    joins the next step; otherwise it waits for running requests to finish: with
    `max_running` slots each turning over every `service_s` on average, a slot frees every
    `service_s / max_running` seconds.
    """
    free_slots = max(max_running - running, 0)
    slots_to_wait_for = waiting_ahead + 1 - free_slots
    if slots_to_wait_for <= 0:
        return 0.0
    return slots_to_wait_for * costs.service_s / max_running


def estimate_ttft_s(
    costs: StepCosts, waiting_ahead: int, running: int, max_running: int, prompt_tokens: int
) -> float:
    """Seconds from now until a new request's first token: waiting for a slot, then the
    prefill of `prompt_tokens` (pass only the tokens the KV cache does not already hold)."""
    wait = start_delay_s(costs, waiting_ahead, running, max_running)
    return wait + first_token_s(costs, prompt_tokens)


@dataclass(order=True)
class _Entry(Generic[T]):
    late: bool  # under LatePolicy.YIELD late entries sort after every on-time one
    deadline: float
    seq: int
    item: T = field(compare=False)
    removed: bool = field(default=False, compare=False)


class DeadlineQueue(Generic[T]):
    """Waiting requests, earliest deadline first (ties: first come, first served); with
    `LatePolicy.YIELD` the ones marked late wait behind all the others.

    Not thread-safe: the engine guards it with its own lock.
    """

    def __init__(self, policy: LatePolicy = LatePolicy.YIELD) -> None:
        self.policy = policy
        self._heap: list[_Entry[T]] = []
        self._entries: dict[int, _Entry[T]] = {}  # id(item) -> entry, for removal
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def push(self, item: T, deadline: float, late: bool = False) -> None:
        entry = _Entry(self._sorts_late(late), deadline, next(self._counter), item)
        self._entries[id(item)] = entry
        heapq.heappush(self._heap, entry)

    def _sorts_late(self, late: bool) -> bool:
        return late and self.policy is LatePolicy.YIELD

    def pop(self) -> T | None:
        """The first waiting item in the policy's order, or None when empty."""
        while self._heap:
            entry = heapq.heappop(self._heap)
            if not entry.removed:
                del self._entries[id(entry.item)]
                return entry.item
        return None

    def remove(self, item: T) -> bool:
        """Take an item out (cancelled while waiting); False if it was not waiting."""
        entry = self._entries.pop(id(item), None)
        if entry is None:
            return False
        entry.removed = True  # lazily dropped from the heap by pop
        return True

    def mark_late(self, item: T) -> None:
        """The item will miss its deadline: under YIELD it moves behind the on-time items."""
        entry = self._entries.get(id(item))
        if entry is None or entry.late or not self._sorts_late(True):
            return
        self.remove(item)
        self.push(item, entry.deadline, late=True)

    def count_before(self, deadline: float, late: bool = False) -> int:
        """How many waiting items would be served before a new one with `deadline`."""
        key = (self._sorts_late(late), deadline)
        return sum(1 for entry in self._entries.values() if (entry.late, entry.deadline) <= key)

    def __iter__(self) -> Iterator[T]:
        return iter([entry.item for entry in self._entries.values()])
