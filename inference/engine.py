"""The engine front shared by both batching back-ends: tickets, EDF admission, streaming.

`Engine.submit` takes a validated request with its prompt token ids and an `emit` callback
(stream events out, as dicts), estimates its time to first token (charging only the prompt
tokens the KV cache does not already hold), flags it at once when that misses the deadline,
and queues it earliest-deadline-first, already-late requests behind the others
(`scheduling.LatePolicy`). A back-end
(`ContinuousBatchingEngine`, `StaticBatchEngine`) pulls from that queue, generates, and hands
token ids back through `_on_tokens`/`_finish`, which turn them into coalesced text deltas and,
at the end, an `InferenceResult` on the ticket.

Threads: callers (Celery task threads) call `submit`/`cancel` and wait on `ticket.done`; the
back-end runs its own threads. `_lock` guards the queue and the running set.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inference.contracts import InferenceRequest, InferenceResult, StreamEventType
from inference.prefix import PrefixTracker
from inference.scheduling import (
    DeadlineQueue,
    LatePolicy,
    StepCosts,
    estimate_ttft_s,
    first_token_s,
    start_delay_s,
)
from inference.textstream import Coalescer, TextStream

Emit = Callable[[dict[str, Any]], None]


class EngineOverloadedError(RuntimeError):
    """The waiting queue is full: the request would wait far past any deadline."""


@dataclass(frozen=True)
class EngineLimits:
    # Requests decoding together. CPU: 32 keeps one decode step of the offline model around
    # 30 ms on 2 cores; a GPU raises it (the worker's thread pool must be at least this big).
    max_running: int = 32
    # Beyond this many waiting requests, new ones are refused rather than queued for minutes.
    max_waiting: int = 256
    max_new_tokens: int = 256  # cap on what a request may ask for
    max_prompt_tokens: int = 1024

    def __post_init__(self) -> None:
        # Zero or less would divide by zero in admission (max_running) or cap every answer
        # at nothing: refuse it here rather than fail inside a step or answer silently.
        for name in ("max_running", "max_waiting", "max_new_tokens", "max_prompt_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"EngineLimits.{name} must be a whole number of at least 1")


@dataclass(eq=False)
class Ticket:
    """One request inside the engine, from submit until its result is set."""

    request: InferenceRequest
    prompt_ids: list[int]
    max_new_tokens: int
    # Leading prompt tokens predicted to be in the KV cache already (prefix sharing), then,
    # once the back-end ran the prefill, the number it really reused where it can tell.
    cached_tokens: int
    emit: Emit
    stream: TextStream
    coalescer: Coalescer = field(default_factory=Coalescer)
    engine_id: str = ""
    submitted_wall: float = field(default_factory=time.time)
    admitted_at: float | None = None  # perf_counter time the back-end took it
    first_token_wall: float | None = None
    last_output_at: float | None = None  # perf_counter time of the latest tokens
    completion_tokens: int = 0
    gpu_seconds: float = 0.0
    flagged_late: bool = False
    finish_reason: str | None = None
    error: str | None = None
    result: InferenceResult | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def arrival(self) -> float:
        # Time to first token counts from the customer's message, not from the worker.
        return self.request.arrival or self.submitted_wall


class Engine(ABC):
    """EDF admission and streaming in front of a batching back-end."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        limits: EngineLimits,
        late_policy: LatePolicy = LatePolicy.YIELD,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.limits = limits
        self.costs = StepCosts()
        # Back-ends with a prefix-sharing KV cache replace this with an enabled tracker.
        self.prefix = PrefixTracker(page_size=1, capacity_pages=1, enabled=False)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._waiting: DeadlineQueue[Ticket] = DeadlineQueue(late_policy)
        self._running: dict[str, Ticket] = {}
        self._closed = False
        self._ids = iter(range(1 << 62))
        self.tokens_generated = 0  # all requests, since start (written by back-end threads only)
        self.prompt_tokens_admitted = 0  # prompt tokens of every request handed to the back-end
        # Of those, the tokens the KV cache served without prefill; None where the back-end
        # cannot tell (no prefix sharing, or a transformers version that hides it).
        self.prompt_tokens_cached: int | None = None
        eos = model.generation_config.eos_token_id
        self.eos_ids: set[int] = set(eos if isinstance(eos, list) else [eos])

    # ------------------------------------------------------------------ caller side

    def submit(self, request: InferenceRequest, prompt_ids: list[int], emit: Emit) -> Ticket:
        """Queue a request. Emits `answer.delayed` right away if it will miss its deadline."""
        ticket = Ticket(
            request=request,
            prompt_ids=prompt_ids,
            max_new_tokens=max(1, min(request.max_new_tokens, self.limits.max_new_tokens)),
            cached_tokens=0,
            emit=emit,
            stream=TextStream(self._decode, stop=tuple(s for s in request.stop if s)),
        )
        with self._lock:
            if len(self._waiting) >= self.limits.max_waiting:
                raise EngineOverloadedError(f"{len(self._waiting)} requests already waiting")
            ticket.cached_tokens = self.prefix.cached_tokens(prompt_ids)
            estimate = self._estimate_locked(ticket)
            ticket.engine_id = f"{request.message_id}#{next(self._ids)}"
            # Flag before queueing, so `answer.delayed` always precedes `answer.start`.
            late = time.time() + estimate > request.deadline
            if late:
                self._flag_late(ticket, estimate)
            self._waiting.push(ticket, request.deadline, late=late)
            self._wake.notify_all()
        return ticket

    def estimate_start_s(self, deadline: float) -> float:
        """Seconds until a new request with `deadline` would get a running slot here."""
        with self._lock:
            return start_delay_s(
                self.costs,
                self._waiting.count_before(deadline),
                len(self._running),
                self.limits.max_running,
            )

    def _estimate_locked(self, ticket: Ticket) -> float:
        """Seconds until the ticket's first token if it were queued now (lock held)."""
        return estimate_ttft_s(
            self.costs,
            waiting_ahead=self._waiting.count_before(ticket.request.deadline, ticket.flagged_late),
            running=len(self._running),
            max_running=self.limits.max_running,
            prompt_tokens=len(ticket.prompt_ids) - ticket.cached_tokens,
        )

    def cancel(self, ticket: Ticket) -> None:
        """Stop a request at the next step (the customer went away)."""
        with self._lock:
            was_waiting = self._waiting.remove(ticket)
        if not was_waiting:
            self._abort(ticket)
        self._finish(ticket, "cancelled")

    def warmup(self, prompt_ids: list[int], requests: int = 2, new_tokens: int = 8) -> None:
        """Run a few short requests end to end twice: the first round pays first-call costs
        (allocation, kernel selection: several times a warm step), so its measurements are
        thrown away; the second round's seed the step costs admission estimates from.
        Without this, every request after start was flagged late until the cold figures faded.
        """
        self._run_warmup_round(prompt_ids, requests, new_tokens)
        self.costs = StepCosts()
        self._run_warmup_round(prompt_ids, requests, new_tokens)
        # Served-from-cache figures count customers' prompts, not the warm-up's.
        with self._lock:
            self.prompt_tokens_admitted = 0
            if self.prompt_tokens_cached is not None:
                self.prompt_tokens_cached = 0

    def _run_warmup_round(self, prompt_ids: list[int], requests: int, new_tokens: int) -> None:
        tickets = []
        for index in range(requests):
            request = InferenceRequest(
                conversation_id="warmup",
                message_id=f"warmup-{index}",
                site_id="warmup",
                messages=[],
                deadline=time.time() + 3600,
                max_new_tokens=new_tokens,
            )
            tickets.append(self.submit(request, prompt_ids, emit=lambda event: None))
        for ticket in tickets:
            ticket.done.wait()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify_all()

    # ------------------------------------------------------------------ back-end side

    @abstractmethod
    def _abort(self, ticket: Ticket) -> None:
        """Make the back-end stop generating for a running ticket (no-op if not running)."""

    def _take_waiting(self, limit: int) -> list[Ticket]:
        """Pop up to `limit` tickets in the queue's order and mark them running (lock held).

        A ticket popped on time whose first token can no longer make its deadline even if it
        starts now is late: it is flagged and goes back behind the requests that still can
        (under `LatePolicy.YIELD`; plain EDF runs it anyway).
        """
        taken: list[Ticket] = []
        while len(taken) < limit:
            ticket = self._waiting.pop()
            if ticket is None:
                break
            if not ticket.flagged_late and self._waiting.policy is LatePolicy.YIELD:
                uncached = len(ticket.prompt_ids) - self.prefix.cached_tokens(ticket.prompt_ids)
                first = first_token_s(self.costs, uncached)
                if time.time() + first > ticket.request.deadline and len(self._waiting):
                    self._flag_late(ticket, first)
                    self._waiting.push(ticket, ticket.request.deadline, late=True)
                    continue
            ticket.admitted_at = time.perf_counter()
            # What the cache holds now (the prediction at submit may be stale); the back-end
            # overwrites it with what it really reused where it can tell.
            ticket.cached_tokens = self.prefix.cached_tokens(ticket.prompt_ids)
            self.prefix.record(ticket.prompt_ids)
            self.prompt_tokens_admitted += len(ticket.prompt_ids)
            self._running[ticket.engine_id] = ticket
            taken.append(ticket)
        return taken

    def _flag_overdue_waiting(self) -> None:
        """A waiting request whose deadline passed before it started: say so once, and let it
        yield to those still on time (lock held)."""
        now = time.time()
        for ticket in self._waiting:
            if not ticket.flagged_late and now > ticket.request.deadline:
                self._flag_late(ticket, self._estimate_locked(ticket))
                self._waiting.mark_late(ticket)

    def _flag_late(self, ticket: Ticket, estimate_s: float) -> None:
        ticket.flagged_late = True
        ticket.emit(
            {
                "type": StreamEventType.DELAYED.value,
                "message_id": ticket.request.message_id,
                "estimated_ttft_ms": round((time.time() + estimate_s - ticket.arrival) * 1000, 1),
            }
        )

    def _announce_start(self, ticket: Ticket) -> None:
        ticket.emit({"type": StreamEventType.START.value, "message_id": ticket.request.message_id})

    def _decode(self, token_ids: Any) -> str:
        ids = [int(t) for t in token_ids if int(t) not in self.eos_ids]
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _on_tokens(self, ticket: Ticket, token_ids: list[int], running: int) -> None:
        """New tokens for a running ticket (all generated ids so far). Back-end threads only."""
        if ticket.finish_reason is not None:
            return  # cancelled or stopped already; late outputs are dropped
        now = time.perf_counter()
        if ticket.first_token_wall is None:
            ticket.first_token_wall = time.time()
            if ticket.admitted_at is not None:
                prefilled = len(ticket.prompt_ids) - ticket.cached_tokens
                self.costs.observe_prefill(prefilled, now - ticket.admitted_at)
        elif ticket.last_output_at is not None:
            self.costs.observe_decode_step(now - ticket.last_output_at)
        since = ticket.last_output_at or ticket.admitted_at or now
        ticket.gpu_seconds += (now - since) / max(running, 1)
        ticket.last_output_at = now
        self.tokens_generated += len(token_ids) - ticket.completion_tokens
        ticket.completion_tokens = len(token_ids)
        text = ticket.coalescer.add(ticket.stream.push(token_ids), now)
        if text:
            self._emit_delta(ticket, text)
        if ticket.stream.stopped:
            self._abort(ticket)
            self._finish(ticket, "stop")

    def _emit_delta(self, ticket: Ticket, text: str) -> None:
        ticket.emit(
            {
                "type": StreamEventType.DELTA.value,
                "message_id": ticket.request.message_id,
                "text": text,
            }
        )

    def _finish(self, ticket: Ticket, reason: str, error: str | None = None) -> None:
        """Set the ticket's result once; later calls (a stop racing a cancel) are no-ops."""
        with self._lock:
            if ticket.finish_reason is not None:
                return
            ticket.finish_reason = reason
            ticket.error = error
            self._running.pop(ticket.engine_id, None)
            self._wake.notify_all()  # a slot is free
        if ticket.admitted_at is not None:
            self.costs.observe_service(time.perf_counter() - ticket.admitted_at)
        rest = ticket.stream.finish()
        if rest:
            ticket.coalescer.pending.append(rest)
        tail = ticket.coalescer.flush()
        if tail and reason != "cancelled":
            self._emit_delta(ticket, tail)
        now = time.time()
        request = ticket.request
        first = ticket.first_token_wall
        ticket.result = InferenceResult(
            conversation_id=request.conversation_id,
            message_id=request.message_id,
            site_id=request.site_id,
            text=ticket.stream.text,
            finish_reason=reason,
            prompt_tokens=len(ticket.prompt_ids),
            completion_tokens=ticket.completion_tokens,
            ttft_ms=None if first is None else round((first - ticket.arrival) * 1000, 1),
            total_ms=round((now - ticket.arrival) * 1000, 1),
            gpu_seconds=round(ticket.gpu_seconds, 4),
            grounding=list(request.grounding),
        )
        ticket.done.set()

    def _finish_from_tokens(self, ticket: Ticket, token_ids: list[int]) -> None:
        """The back-end says the generation ended: EOS means 'stop', otherwise 'length'."""
        ended_on_eos = bool(token_ids) and int(token_ids[-1]) in self.eos_ids
        self._finish(ticket, "stop" if ended_on_eos else "length")

    @property
    def prefix_hit_share(self) -> float | None:
        """Share of admitted prompt tokens the KV cache served without prefill (None: unknown)."""
        if self.prompt_tokens_cached is None or not self.prompt_tokens_admitted:
            return None
        return self.prompt_tokens_cached / self.prompt_tokens_admitted

    @property
    def running_count(self) -> int:
        return len(self._running)

    @property
    def waiting_count(self) -> int:
        return len(self._waiting)
