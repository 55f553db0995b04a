"""Answer one inference request end to end: validate, claim, generate, stream, finalize.

`AnswerService.handle` is what the Celery task runs (in one of the worker's threads). It is
written against small parts (engine, Redis client, event publisher, a `finalize` callable)
so the delivery rules are in one readable place:

- at-least-once delivery in, exactly-one answer out: a lease (a redis-py lock that expires
  unless renewed) makes a redelivered copy of a request that is still being answered wait
  instead of generating twice; a dead worker's lease expires and the copy takes over. The
  final `answer.end`/`answer.refused` is sent only after winning `SET NX` on an "answered"
  key, so a request is answered once and never twice. The key holds the finalize task's
  payload until the finalize task is queued: a worker that dies after winning it (before or
  after the send, before queuing the finalize) leaves the answer to be stored by the
  redelivered copy, which finds the payload and queues the finalize (stores an answer once).
- bad requests are refused with a stable code and a human message, never silently dropped.
- every request that reaches an end (any reason) is handed to the CPU queue's finalize task.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from inference.admission import (
    DEFAULT_SHED_AFTER_S,
    HANDED_BACK_TTL_S,
    OVERLOADED_MESSAGE,
    Action,
    Fleet,
    handed_back_key,
    worker_decision,
)
from inference.contracts import (
    ANSWERED_TTL_S,
    HANDED_BACK_TOTAL_KEY,
    SHED_TOTAL_KEY,
    InferenceRequest,
    InferenceResult,
    PromptMessage,
    StreamEventType,
    answered_key,
    cancel_key,
    conversation_group,
)
from inference.engine import Engine, EngineOverloadedError
from inference.events import EventPublisher
from inference.prompt import PromptTooLongError, fit_prompt

logger = logging.getLogger(__name__)

# A request picked up this long after its deadline is not answered: the customer got a
# holding reply long ago and has most likely moved on (e.g. a redelivery after a crash).
STALE_AFTER_S = 120.0
# The lease outlives a missed renewal or two; a dead worker's requests restart within it.
LEASE_TTL_S = 10.0
LEASE_RENEW_S = 2.0
# How often a waiting task thread checks the cancel key: "stop at the next step" with a
# decode step of tens of milliseconds.
CANCEL_POLL_S = 0.05
# What the answered key holds once a concluded request's finalize task is queued (before,
# it holds the finalize payload; `_duplicate`).
FINALIZE_QUEUED = "finalize-queued"
SEND_TIMEOUT_S = 10.0
_SITE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def lease_key(message_id: str) -> str:
    return f"inference:lease:{message_id}"


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str
    finish_reason: str = "error"


def check_request(request: InferenceRequest) -> Refusal | None:
    """Refusal for a request that must not reach the model, or None if it may."""
    if not _SITE_ID.match(request.site_id or ""):
        return Refusal("unknown_site", f"site {request.site_id!r} is not a known site id")
    user_turns = [m for m in request.messages if m.role == "user"]
    if not user_turns or not user_turns[-1].content.strip():
        return Refusal("empty_prompt", "the message to answer is empty")
    if request.max_new_tokens < 1:
        return Refusal("bad_request", "max_new_tokens must be at least 1")
    if time.time() > request.deadline + STALE_AFTER_S:
        return Refusal(
            "stale_request",
            "this request's deadline passed long ago; it is not answered any more",
            finish_reason="deadline",
        )
    return None


class AnswerService:
    def __init__(
        self,
        engine: Engine,
        redis_client: redis.Redis,
        publisher: EventPublisher,
        finalize: Callable[[dict[str, Any]], None],
        render: Callable[[list[PromptMessage]], Any] | None = None,
        fleet: Fleet | None = None,
        hand_back: Callable[[dict[str, Any]], None] | None = None,
        shed_after_s: float = DEFAULT_SHED_AFTER_S,
    ) -> None:
        self.engine = engine
        self.redis = redis_client
        self.publisher = publisher
        self.finalize = finalize
        # Without a fleet view (tests of one engine) every request is admitted.
        self.fleet = fleet
        self.hand_back = hand_back
        self.shed_after_s = shed_after_s
        # Given, the engine gets what it returns (chat messages for an OpenAI-compatible
        # server: inference/openai_engine.py); else token ids fitted to the budget.
        self.render = render

    def handle(self, payload: dict[str, Any]) -> str:
        """Answer one request; returns what happened (for logs and the task result)."""
        try:
            request = InferenceRequest.from_dict(payload)
        except (TypeError, KeyError, ValueError) as error:
            return self._refuse_malformed(payload, error)
        logger.info("message %s: received", request.message_id)
        outcome = self._handle(request)
        logger.info("message %s: %s", request.message_id, outcome)
        return outcome

    def _handle(self, request: InferenceRequest) -> str:
        if self._is_answered(request):
            return self._duplicate(request)
        lease = self.redis.lock(lease_key(request.message_id), timeout=LEASE_TTL_S)
        # Another delivery of this request may be running: wait for it to finish, or for its
        # lease to lapse (its worker died), whichever comes first.
        while not lease.acquire(blocking=True, blocking_timeout=LEASE_TTL_S):
            if self._is_answered(request):
                return self._duplicate(request)
        try:
            if self._is_answered(request):
                return self._duplicate(request)
            return self._answer(request, lease)
        finally:
            try:
                lease.release()
            except redis.exceptions.LockError:
                logger.warning("lease for %s expired before release", request.message_id)

    def _answer(self, request: InferenceRequest, lease: Any) -> str:
        refusal = check_request(request)
        if refusal is not None:
            return self._refuse(request, refusal)
        if self.redis.exists(cancel_key(request.message_id)):
            # Cancelled while queued (a suggestion chosen, the customer gone): never started.
            cancelled = Refusal("cancelled", "cancelled before it started", "cancelled")
            return self._refuse(request, cancelled)
        try:
            request, prompt = self._prompt_for(request)
        except PromptTooLongError as error:
            return self._refuse(request, Refusal("prompt_too_long", str(error)))
        action = self._admission(request)
        if action is Action.HAND_BACK:
            assert self.hand_back is not None
            self.redis.set(handed_back_key(request.message_id), "1", ex=HANDED_BACK_TTL_S)
            self.hand_back(request.to_dict())
            self.redis.incr(HANDED_BACK_TOTAL_KEY)
            return "handed_back"
        if action is Action.SHED:
            self.redis.incr(SHED_TOTAL_KEY)
            return self._refuse(request, Refusal("overloaded", OVERLOADED_MESSAGE))
        group = conversation_group(request.conversation_id)
        try:
            ticket = self.engine.submit(request, prompt, lambda e: self._send(group, e))
        except EngineOverloadedError as error:
            self.redis.incr(SHED_TOTAL_KEY)
            return self._refuse(request, Refusal("overloaded", f"the model is busy: {error}"))
        next_renew = time.monotonic() + LEASE_RENEW_S
        try:
            while not ticket.done.wait(CANCEL_POLL_S):
                if self.redis.exists(cancel_key(request.message_id)):
                    self.engine.cancel(ticket)
                if time.monotonic() >= next_renew:
                    self._renew(lease, request)
                    next_renew = time.monotonic() + LEASE_RENEW_S
        except redis.RedisError:
            # Redis went away mid-answer: the task is put back on its queue (worker.py), so
            # stop this generation rather than run it beside the copy that will start again.
            self.engine.cancel(ticket)
            raise
        result = ticket.result
        assert result is not None  # set before `done`
        if result.finish_reason == "error":
            event = {
                "type": StreamEventType.ERROR.value,
                "message_id": request.message_id,
                "code": "generation_failed",
                "message": "the answer could not be generated; please try again",
            }
        else:
            event = {
                "type": StreamEventType.END.value,
                "message_id": request.message_id,
                "result": result.to_dict(),
            }
        return self._conclude(request, event, result)

    def _prompt_for(self, request: InferenceRequest) -> tuple[InferenceRequest, Any]:
        """What the engine is given for the request: `render`'s output when one is set, else
        token ids fitted to the budget, with the request's grounding narrowed to the FAQ
        entries the model sees."""
        if self.render is not None:
            return request, self.render(request.messages)
        fitted = fit_prompt(
            self.engine.tokenizer, request.messages, self.engine.limits.max_prompt_tokens
        )
        if fitted.trimmed:
            logger.info(
                "message %s: prompt fitted to %d tokens: %d turns, %d FAQ entries left out, "
                "question shortened by %d characters",
                request.message_id,
                len(fitted.ids),
                fitted.dropped_turns,
                fitted.dropped_faq_entries,
                fitted.shortened_chars,
            )
        if fitted.dropped_faq_refs:
            # The answer is grounded only on the FAQ versions the model saw.
            left_out = set(fitted.dropped_faq_refs)
            kept = [ref for ref in request.grounding if ref not in left_out]
            request = dataclasses.replace(request, grounding=kept)
        return request, fitted.ids

    def _admission(self, request: InferenceRequest) -> Action:
        """Admit, hand back to the queue (another worker starts it sooner) or shed."""
        start_delay = getattr(self.engine, "estimate_start_s", None)
        if self.fleet is None or start_delay is None:
            return Action.ADMIT
        try:
            others = self.fleet.others()
            handed_back = bool(self.redis.exists(handed_back_key(request.message_id)))
        except redis.RedisError as error:  # admission is an optimisation: answer anyway
            logger.warning("admission could not read the fleet: %s", error)
            return Action.ADMIT
        now = time.time()
        return worker_decision(
            now=now,
            arrival=request.arrival or now,
            deadline=request.deadline,
            local_start_s=start_delay(request.deadline),
            others=others,
            handed_back_before=handed_back or self.hand_back is None,
            shed_after_s=self.shed_after_s,
        )

    def _renew(self, lease: Any, request: InferenceRequest) -> None:
        try:
            lease.reacquire()
        except redis.exceptions.LockError:
            # This thread stalled past the lease (an overloaded host): another delivery may
            # start the answer again. Keep going; the answered key still lets only one finish.
            logger.warning("lease for %s lapsed during generation", request.message_id)

    def _refuse(self, request: InferenceRequest, refusal: Refusal) -> str:
        event = {
            "type": StreamEventType.REFUSED.value,
            "message_id": request.message_id,
            "code": refusal.code,
            "message": refusal.message,
        }
        now = time.time()
        arrival = request.arrival or now
        result = InferenceResult(
            conversation_id=request.conversation_id,
            message_id=request.message_id,
            site_id=request.site_id,
            text="",
            finish_reason=refusal.finish_reason,
            prompt_tokens=0,
            completion_tokens=0,
            ttft_ms=None,
            total_ms=round((now - arrival) * 1000, 1),
            grounding=list(request.grounding),
        )
        self._conclude(request, event, result)
        return f"refused:{refusal.code}"

    def _refuse_malformed(self, payload: Any, error: Exception) -> str:
        """A payload that is not an InferenceRequest: refuse it if we can tell whose it is."""
        logger.error("malformed inference request: %s", error)
        ids = payload if isinstance(payload, dict) else {}
        conversation_id, message_id = ids.get("conversation_id"), ids.get("message_id")
        if not (isinstance(conversation_id, str) and isinstance(message_id, str)):
            return "refused:bad_request"  # nobody to tell; the log has it
        if not self.redis.set(answered_key(message_id), "1", nx=True, ex=ANSWERED_TTL_S):
            return "duplicate"
        event = {
            "type": StreamEventType.REFUSED.value,
            "message_id": message_id,
            "code": "bad_request",
            "message": f"the request is malformed: {error}",
        }
        self._send(conversation_group(conversation_id), event).result(timeout=SEND_TIMEOUT_S)
        return "refused:bad_request"

    def _conclude(
        self, request: InferenceRequest, event: dict[str, Any], result: InferenceResult
    ) -> str:
        """Send the final event and the finalize task, once per message id."""
        finalize_payload = result.to_dict()
        claimed = self.redis.set(
            answered_key(request.message_id),
            json.dumps(finalize_payload),
            nx=True,
            ex=ANSWERED_TTL_S,
        )
        if not claimed:
            return "duplicate"
        group = conversation_group(request.conversation_id)
        # Wait for Redis to have the final event before finalizing and acking the task.
        self._send(group, event).result(timeout=SEND_TIMEOUT_S)
        self.finalize(finalize_payload)
        # The finalize is queued: a later delivery of this request has nothing left to do.
        self.redis.set(answered_key(request.message_id), FINALIZE_QUEUED, xx=True, keepttl=True)
        return result.finish_reason

    def _duplicate(self, request: InferenceRequest) -> str:
        """A delivery of a request that was already concluded: queue the finalize again.

        The worker that concluded it may have died before its finalize task was queued: the
        payload it claimed the answer with is then still in the answered key (replaced by
        FINALIZE_QUEUED once the task is queued). If it died between the two, the finalize
        runs twice; it stores an answer once, so the second changes nothing. Keys set by the
        chat layer ("timeout") or by a refusal of a malformed payload carry no payload."""
        claimed_with = self.redis.get(answered_key(request.message_id))
        if claimed_with is not None and claimed_with.startswith(b"{"):
            self.finalize(json.loads(claimed_with))
            return "duplicate: finalize queued again"
        return "duplicate"

    def _is_answered(self, request: InferenceRequest) -> bool:
        return bool(self.redis.exists(answered_key(request.message_id)))

    def _send(self, group: str, event: dict[str, Any]):  # -> Future[None]
        return self.publisher.publish(group, event)
