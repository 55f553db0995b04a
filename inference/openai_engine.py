"""The `openai` back end: answers streamed from an OpenAI-compatible server (vLLM, SGLang, or a
hosted API such as DeepSeek's) through the official `openai` async client.

It has the caller-side surface of `engine.Engine` (`submit`/`cancel`, tickets with `done` and
`result`, `running_count`, `tokens_generated`, `warmup`, `close`), so `AnswerService` (lease,
answered-once, finalize) and the stats reporter drive it unchanged. What it keeps of the
contract in front of the server:

- admission: at most `max_concurrency` calls in flight; the others wait in the worker, earliest
  deadline first, late ones behind those still on time (`scheduling.DeadlineQueue`), with the
  time to first token estimated from
  measured server figures (`scheduling.StepCosts`, `estimate_ttft_s`): `answer.delayed` at
  once when it misses the deadline, or when a request's deadline passes before its first token.
- streaming: one chat completion stream per request, text deltas coalesced to one message per
  ~30 ms, token counts from the final `usage` chunk (`stream_options.include_usage`).
- cancellation cancels the call's task, which closes the HTTP stream: the server sees the
  client go away and aborts the request, freeing its slot.
- faults (`openai_faults`): every failed call is retried while the request's retry window
  lasts; a stream that failed after text went out restarts the answer with a second
  `answer.start` (the chat layer drops the partial text); past the window, or on a fault that
  cannot pass, the request ends in `error` and the customer gets the chat error.

Threads: the client and every call run on one asyncio loop in a thread of its own; task
threads call `submit`/`cancel` and wait on `ticket.done`. `_lock` guards the queue, the running
set and each ticket's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import openai

from inference.contracts import InferenceRequest, InferenceResult, PromptMessage
from inference.engine import Engine, EngineLimits, EngineOverloadedError
from inference.envvars import EnvSettingError
from inference.openai_faults import (
    Fault,
    MalformedChunkError,
    StreamCutError,
    classify,
    retry_delay_s,
)
from inference.openai_settings import OpenAISettings
from inference.prompt import fold_system
from inference.scheduling import DeadlineQueue, StepCosts, estimate_ttft_s
from inference.textstream import Coalescer

logger = logging.getLogger(__name__)
# The HTTP client logs every request at INFO: one line per answer, nothing a reader needs
# (faults are logged here, with the message id). Its warnings still come through.
logging.getLogger("httpx2").setLevel(logging.WARNING)

Emit = Callable[[dict[str, Any]], None]

# The worker checks waiting deadlines this often: "answer.delayed" goes out within it.
ADMISSION_TICK_S = 0.05
# Until the server's usage says otherwise: characters of chat text per prompt token, for the
# admission estimate before a request's own count is known (about 4 for English BPE).
DEFAULT_CHARS_PER_TOKEN = 4.0
CONNECT_TIMEOUT_S = 3.0  # a server that accepts no connection this long is unreachable
START_CHECK_TIMEOUT_S = 30.0
# vLLM ends an aborted request (e.g. the server shutting down) with this finish reason.
SERVER_ABORT = "abort"

# Faults the client or a stream raise; anything else is a bug, logged with its traceback.
SERVER_FAULTS: tuple[type[BaseException], ...] = (
    openai.APIError,
    StreamCutError,
    MalformedChunkError,
    ValueError,  # json.JSONDecodeError: a chunk that is not JSON
)


@dataclass(eq=False)
class ServerTicket:
    """One request inside this back end, from submit until its result is set."""

    request: InferenceRequest
    messages: list[dict[str, str]]
    max_new_tokens: int
    emit: Emit
    prompt_tokens_estimate: int
    engine_id: str = ""
    submitted_wall: float = field(default_factory=time.time)
    flagged_late: bool = False
    admitted_at: float | None = None  # perf_counter time the call was started
    first_token_wall: float | None = None
    last_output_at: float | None = None  # perf_counter time of the latest text
    text: list[str] = field(default_factory=list)
    coalescer: Coalescer = field(default_factory=Coalescer)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    chunks: int = 0  # content chunks of the current attempt (token count without `usage`)
    server_finish: str | None = None
    attempts: int = 0
    gpu_seconds: float = 0.0
    task: asyncio.Task[None] | None = None
    cancel_requested: bool = False
    finish_reason: str | None = None
    error: str | None = None
    result: InferenceResult | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def arrival(self) -> float:
        return self.request.arrival or self.submitted_wall


def chat_messages(messages: Sequence[PromptMessage]) -> list[dict[str, str]]:
    """What the server is sent: the same turns the in-process prompt is built from, in the same
    stable-prefix order (site instructions and FAQ grounding first), so the server's prefix
    cache (vLLM `--enable-prefix-caching`) serves a site's common prefix."""
    if not any(m.role == "user" for m in messages):
        raise ValueError("a prompt needs at least one user message")
    return fold_system(messages)


class OpenAIEngine:
    """EDF admission and streaming in front of an OpenAI-compatible server."""

    # The parts of the in-process engine's front that read only what this class has too
    # (the lock, the queue, the running set, the costs, the limits; a ticket's request, emit,
    # arrival and late flag): one definition of the events and figures for both back ends.
    estimate_start_s = Engine.estimate_start_s
    running_count = Engine.running_count
    waiting_count = Engine.waiting_count
    _flag_late = Engine._flag_late
    _announce_start = Engine._announce_start
    _emit_delta = Engine._emit_delta

    def __init__(self, settings: OpenAISettings, limits: EngineLimits) -> None:
        self.settings = settings
        # The concurrency window is this back end's running limit: the fleet's capacity
        # figures (runtime.StatsReporter) and the admission estimates read it from here.
        self.limits = dataclasses.replace(limits, max_running=settings.max_concurrency)
        self.costs = StepCosts()
        self.tokenizer = None  # the server tokenizes; nothing here needs one
        self.tokens_generated = 0
        self._chars_per_token = DEFAULT_CHARS_PER_TOKEN
        self._lock = threading.Lock()
        self._waiting: DeadlineQueue[ServerTicket] = DeadlineQueue()
        self._running: dict[str, ServerTicket] = {}
        self._ids = iter(range(1 << 62))
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._wake: asyncio.Event | None = None
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run_loop, args=(ready,), name="openai-backend", daemon=True
        )
        self._thread.start()
        ready.wait()
        self._client = self._call_soon(self._make_client())

    # ------------------------------------------------------------------ caller side

    def render(self, messages: Sequence[PromptMessage]) -> list[dict[str, str]]:
        return chat_messages(messages)

    def submit(
        self, request: InferenceRequest, messages: list[dict[str, str]], emit: Emit
    ) -> ServerTicket:
        """Queue a request. Emits `answer.delayed` right away if it will miss its deadline."""
        chars = sum(len(m["content"]) for m in messages)
        ticket = ServerTicket(
            request=request,
            messages=messages,
            max_new_tokens=max(1, min(request.max_new_tokens, self.limits.max_new_tokens)),
            emit=emit,
            prompt_tokens_estimate=max(1, round(chars / self._chars_per_token)),
        )
        with self._lock:
            if self._closed:
                raise EngineOverloadedError("the worker is shutting down")
            if len(self._waiting) >= self.limits.max_waiting:
                raise EngineOverloadedError(f"{len(self._waiting)} requests already waiting")
            estimate = self._estimate_locked(ticket, self._waiting.count_before(request.deadline))
            ticket.engine_id = f"{request.message_id}#{next(self._ids)}"
            # Flagged before queueing, so `answer.delayed` always precedes `answer.start`; a
            # late request waits behind those that can still make their deadline.
            late = time.time() + estimate > request.deadline
            if late:
                self._flag_late(ticket, estimate)
            self._waiting.push(ticket, request.deadline, late=late)
        self._loop.call_soon_threadsafe(self._poke)
        return ticket

    def cancel(self, ticket: ServerTicket) -> None:
        """Stop a request: taken out of the queue, or its call cancelled (closing its stream)."""
        with self._lock:
            if ticket.finish_reason is not None or ticket.cancel_requested:
                return
            ticket.cancel_requested = True
            was_waiting = self._waiting.remove(ticket)
        if was_waiting:
            self._finish(ticket, "cancelled")
        else:
            self._loop.call_soon_threadsafe(self._cancel_call, ticket)

    def warmup(self, messages: list[PromptMessage], requests: int = 2, new_tokens: int = 8) -> None:
        """Check the server and the model at start, then seed the measured costs with a
        realistic prompt (a short one would charge the call's fixed cost to few tokens).

        A wrong model name or API key stops the worker naming the setting. A server that
        cannot be reached is only logged: it may be starting after the worker, and requests
        are retried until it answers.
        """
        try:
            self._call_soon(self._check_server(), timeout=START_CHECK_TIMEOUT_S)
        except openai.APIConnectionError as error:
            logger.warning(
                "OpenAI-compatible server at %s not reachable yet (%s); requests will retry",
                self.settings.base_url,
                error,
            )
            return
        for _ in range(2):  # the first round pays first-call costs; its figures are dropped
            self.costs = StepCosts()
            tickets = [
                self._warmup_ticket(index, messages, new_tokens) for index in range(requests)
            ]
            for ticket in tickets:
                ticket.done.wait(START_CHECK_TIMEOUT_S)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        if self._thread.is_alive():
            self._call_soon(self._shutdown(), timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    # ------------------------------------------------------------------ the loop thread

    def _run_loop(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._wake = asyncio.Event()
        self._admission = self._loop.create_task(self._admit_forever())
        ready.set()
        self._loop.run_forever()
        self._loop.close()

    def _call_soon(self, coroutine: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _make_client(self) -> openai.AsyncOpenAI:
        stall = self.settings.stall_timeout_s
        return openai.AsyncOpenAI(
            base_url=self.settings.base_url,
            api_key=self.settings.api_key,
            # Retries are ours: they know the request's deadline and retry window.
            max_retries=0,
            # The read timeout bounds every wait for bytes: the response, the first token,
            # the gap between two chunks.
            timeout=openai.Timeout(stall, connect=min(CONNECT_TIMEOUT_S, stall)),
        )

    async def _shutdown(self) -> None:
        tasks = [t.task for t in list(self._running.values()) if t.task is not None]
        for task in [self._admission, *tasks]:
            task.cancel()
        await asyncio.gather(self._admission, *tasks, return_exceptions=True)
        await self._client.close()

    def _poke(self) -> None:
        assert self._wake is not None
        self._wake.set()

    async def _admit_forever(self) -> None:
        assert self._wake is not None
        while not self._closed:
            with self._lock:
                self._flag_overdue_locked()
                free = self.limits.max_running - len(self._running)
                admitted = []
                while len(admitted) < free and (ticket := self._waiting.pop()) is not None:
                    ticket.admitted_at = time.perf_counter()
                    self._running[ticket.engine_id] = ticket
                    admitted.append(ticket)
            for ticket in admitted:
                ticket.task = self._loop.create_task(self._serve(ticket))
            with contextlib.suppress(TimeoutError):  # the tick re-checks waiting deadlines
                await asyncio.wait_for(self._wake.wait(), ADMISSION_TICK_S)
            self._wake.clear()

    def _cancel_call(self, ticket: ServerTicket) -> None:
        if ticket.task is not None:
            ticket.task.cancel()
        else:
            self._finish(ticket, "cancelled")

    async def _serve(self, ticket: ServerTicket) -> None:
        try:
            await self._serve_with_retries(ticket)
        except asyncio.CancelledError:
            self._finish(ticket, "cancelled")
        except Exception as error:  # noqa: BLE001 - a bug must still end the request
            logger.exception("message %s: unexpected failure", ticket.request.message_id)
            self._finish(ticket, "error", error=f"{type(error).__name__}: {error}")

    async def _serve_with_retries(self, ticket: ServerTicket) -> None:
        give_up_at = ticket.arrival + self.settings.retry_window_s
        while True:
            ticket.attempts += 1
            try:
                await self._call(ticket)
                return
            except SERVER_FAULTS as error:
                fault = classify(error)
            delay = retry_delay_s(fault, ticket.attempts - 1, time.time(), give_up_at)
            self._log_fault(ticket, fault, delay)
            if delay is None:
                self._finish(ticket, "error", error=f"{fault.kind.value}: {fault.detail}")
                return
            if ticket.first_token_wall is None and not ticket.flagged_late:
                estimate = delay + self._estimate_locked(ticket, 0)
                if time.time() + estimate > ticket.request.deadline:
                    self._flag_late(ticket, estimate)
            await asyncio.sleep(delay)

    def _log_fault(self, ticket: ServerTicket, fault: Fault, delay: float | None) -> None:
        then = "giving up" if delay is None else f"retrying in {delay:.2f} s"
        logger.warning(
            "message %s: attempt %d failed (%s: %s); %s",
            ticket.request.message_id,
            ticket.attempts,
            fault.kind.value,
            fault.detail,
            then,
        )

    async def _call(self, ticket: ServerTicket) -> None:
        """One attempt: the whole stream, or an exception (a server fault, or cancellation)."""
        request = ticket.request
        stop = [s for s in request.stop if s]
        started = time.perf_counter()
        stream = await self._client.chat.completions.create(
            model=self.settings.model,
            messages=ticket.messages,  # type: ignore[arg-type]
            max_tokens=ticket.max_new_tokens,
            temperature=0,  # greedy, like the in-process engine
            stream=True,
            stream_options={"include_usage": True},
            **({"stop": stop} if stop else {}),
        )
        try:
            self._start_attempt(ticket)
            async for chunk in stream:
                self._on_chunk(ticket, chunk, started)
        finally:
            await stream.close()  # on cancellation too: the server aborts what it generates
        if ticket.server_finish is None:
            raise StreamCutError("the stream ended before a finish reason")
        if ticket.server_finish == SERVER_ABORT:
            raise StreamCutError("the server aborted the request")
        self._finish(ticket, "length" if ticket.server_finish == "length" else "stop")

    def _start_attempt(self, ticket: ServerTicket) -> None:
        """A new attempt streams the answer from its beginning: a second `answer.start` tells
        the chat layer to drop the text of a failed one."""
        ticket.text.clear()
        ticket.coalescer = Coalescer()
        ticket.chunks = 0
        ticket.server_finish = None
        self._announce_start(ticket)

    def _on_chunk(self, ticket: ServerTicket, chunk: Any, started: float) -> None:
        try:
            usage = chunk.usage
            choices = chunk.choices
            if not isinstance(choices, list):
                raise TypeError("choices is not a list")
            pieces = []
            for choice in choices:
                content = choice.delta.content if choice.delta is not None else None
                if content is not None and not isinstance(content, str):
                    raise TypeError("delta.content is not a string")
                pieces.append(content or "")
                if choice.finish_reason:
                    ticket.server_finish = str(choice.finish_reason)
            if usage is not None:
                prompt_tokens, completion_tokens = (
                    int(usage.prompt_tokens),
                    int(usage.completion_tokens),
                )
        except (AttributeError, TypeError, ValueError) as error:
            raise MalformedChunkError(f"{error}: {str(chunk)[:200]}") from None
        if usage is not None:
            self._on_usage(ticket, prompt_tokens, completion_tokens)
        text = "".join(pieces)
        if text:
            self._on_text(ticket, text, started)

    def _on_text(self, ticket: ServerTicket, text: str, started: float) -> None:
        now = time.perf_counter()
        if ticket.first_token_wall is None:
            ticket.first_token_wall = time.time()
        if ticket.chunks == 0:
            self.costs.observe_prefill(ticket.prompt_tokens_estimate, now - started)
        elif ticket.last_output_at is not None:
            self.costs.observe_decode_step(now - ticket.last_output_at)
        since = ticket.last_output_at if ticket.chunks else started
        ticket.gpu_seconds += (now - (since or now)) / max(len(self._running), 1)
        ticket.last_output_at = now
        ticket.chunks += 1
        self.tokens_generated += 1  # one token per chunk; corrected by the usage figures
        ticket.text.append(text)
        delta = ticket.coalescer.add(text, now)
        if delta:
            self._emit_delta(ticket, delta)

    def _on_usage(self, ticket: ServerTicket, prompt_tokens: int, completion_tokens: int) -> None:
        self.tokens_generated += completion_tokens - ticket.chunks
        ticket.prompt_tokens, ticket.completion_tokens = prompt_tokens, completion_tokens
        if prompt_tokens > 0:
            chars = sum(len(m["content"]) for m in ticket.messages)
            self._chars_per_token = chars / prompt_tokens

    # ------------------------------------------------------------------ admission figures

    def _estimate_locked(self, ticket: ServerTicket, waiting_ahead: int) -> float:
        return estimate_ttft_s(
            self.costs,
            waiting_ahead=waiting_ahead,
            running=len(self._running),
            max_running=self.limits.max_running,
            prompt_tokens=ticket.prompt_tokens_estimate,
        )

    def _flag_overdue_locked(self) -> None:
        """A request whose deadline passed before its first token: say so once (lock held)."""
        now = time.time()
        for ticket in self._waiting:
            if not ticket.flagged_late and now > ticket.request.deadline:
                self._flag_late(ticket, self._estimate_locked(ticket, len(self._waiting)))
                self._waiting.mark_late(ticket)  # behind the requests still on time
        for ticket in self._running.values():
            no_text_yet = ticket.first_token_wall is None
            if not ticket.flagged_late and no_text_yet and now > ticket.request.deadline:
                self._flag_late(ticket, self._estimate_locked(ticket, 0))

    # ------------------------------------------------------------------ the end

    def _finish(self, ticket: ServerTicket, reason: str, error: str | None = None) -> None:
        """Set the ticket's result once; later calls (a cancel racing the end) are no-ops."""
        with self._lock:
            if ticket.finish_reason is not None:
                return
            ticket.finish_reason = reason
            ticket.error = error
            self._running.pop(ticket.engine_id, None)
        if ticket.admitted_at is not None:
            self.costs.observe_service(time.perf_counter() - ticket.admitted_at)
        tail = ticket.coalescer.flush()
        if tail and reason in {"stop", "length"}:
            self._emit_delta(ticket, tail)
        if not ticket.completion_tokens:
            ticket.completion_tokens = ticket.chunks  # the server sent no usage
        now = time.time()
        request = ticket.request
        first = ticket.first_token_wall
        ticket.result = InferenceResult(
            conversation_id=request.conversation_id,
            message_id=request.message_id,
            site_id=request.site_id,
            text="".join(ticket.text) if reason in {"stop", "length"} else "",
            finish_reason=reason,
            prompt_tokens=ticket.prompt_tokens,
            completion_tokens=ticket.completion_tokens,
            ttft_ms=None if first is None else round((first - ticket.arrival) * 1000, 1),
            total_ms=round((now - ticket.arrival) * 1000, 1),
            gpu_seconds=round(ticket.gpu_seconds, 4),
            grounding=list(request.grounding),
        )
        ticket.done.set()
        if self._wake is not None and not self._closed:
            self._loop.call_soon_threadsafe(self._poke)  # a slot is free

    # ------------------------------------------------------------------ start-up

    async def _check_server(self) -> None:
        try:
            listed = [model.id async for model in self._client.models.list()]
        except openai.AuthenticationError:
            raise EnvSettingError(
                f"INFERENCE_OPENAI_API_KEY: the server at {self.settings.base_url} refused the "
                "key (HTTP 401)" + ("" if self.settings.has_api_key else "; none is set")
            ) from None
        if self.settings.model not in listed:
            raise EnvSettingError(
                f"INFERENCE_OPENAI_MODEL={self.settings.model!r} is not served at "
                f"{self.settings.base_url}; it serves: {', '.join(listed) or 'nothing'}"
            )
        logger.info(
            "OpenAI-compatible back end: %s at %s (max %d concurrent)",
            self.settings.model,
            self.settings.base_url,
            self.settings.max_concurrency,
        )

    def _warmup_ticket(
        self, index: int, messages: list[PromptMessage], new_tokens: int
    ) -> ServerTicket:
        request = InferenceRequest(
            conversation_id="warmup",
            message_id=f"warmup-{index}",
            site_id="warmup",
            messages=messages,
            deadline=time.time() + 3600,
            max_new_tokens=new_tokens,
        )
        return self.submit(request, self.render(request.messages), emit=lambda event: None)


def start_openai_engine(
    settings: OpenAISettings, limits: EngineLimits, warmup_messages: list[PromptMessage]
) -> OpenAIEngine:
    """The back end started and checked against its server (closed again if that fails)."""
    engine = OpenAIEngine(settings, limits)
    try:
        engine.warmup(warmup_messages)
    except BaseException:
        engine.close()
        raise
    return engine
