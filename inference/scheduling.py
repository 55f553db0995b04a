"""SLA-aware admission: earliest-deadline-first waiting queue and time-to-first-token estimates.

Pure logic (no model, no threads), shared by both engines and unit-tested directly.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

# Exponential moving average weight of a new measurement: recent enough to follow load changes
# within a second of decode steps, smooth enough that one slow step does not swing admission.
EMA_WEIGHT = 0.1


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
        self._observe("prefill_token_s", seconds / max(prompt_tokens, 1))

    def observe_service(self, seconds: float) -> None:
        self._observe("service_s", seconds)


def estimate_ttft_s(
    costs: StepCosts, waiting_ahead: int, running: int, max_running: int, prompt_tokens: int
) -> float:
    """Seconds from now until a new request's first token.

    `waiting_ahead` requests (earlier deadlines) are admitted before it. If a running slot is
    free for it, it joins the next step and pays its prefill; otherwise it waits for
    running requests to finish: with `max_running` slots each turning over every `service_s`
    on average, a slot frees every `service_s / max_running` seconds.
    """
    first_token = costs.decode_step_s + prompt_tokens * costs.prefill_token_s
    free_slots = max(max_running - running, 0)
    slots_to_wait_for = waiting_ahead + 1 - free_slots
    if slots_to_wait_for <= 0:
        return first_token
    return slots_to_wait_for * costs.service_s / max_running + first_token


@dataclass(order=True)
class _Entry(Generic[T]):
    deadline: float
    seq: int
    item: T = field(compare=False)
    removed: bool = field(default=False, compare=False)


class DeadlineQueue(Generic[T]):
    """Waiting requests ordered earliest deadline first (ties: first come, first served).

    Not thread-safe: the engine guards it with its own lock.
    """

    def __init__(self) -> None:
        self._heap: list[_Entry[T]] = []
        self._entries: dict[int, _Entry[T]] = {}  # id(item) -> entry, for removal
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def push(self, item: T, deadline: float) -> None:
        entry = _Entry(deadline, next(self._counter), item)
        self._entries[id(item)] = entry
        heapq.heappush(self._heap, entry)

    def pop(self) -> T | None:
        """The waiting item with the earliest deadline, or None when empty."""
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

    def count_before(self, deadline: float) -> int:
        """How many waiting items would be served before a new one with `deadline`."""
        return sum(1 for entry in self._entries.values() if entry.deadline <= deadline)

    def __iter__(self) -> Iterator[T]:
        return iter([entry.item for entry in self._entries.values()])
