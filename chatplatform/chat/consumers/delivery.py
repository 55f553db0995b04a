"""Answers on their way to the customer: the SLA guard (holding reply, timeout), the model's
stream relayed from inference workers (channel-layer group messages), failures, whole answers."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async

from chatplatform import metrics
from chatplatform.chat import answering, config, limits, store
from chatplatform.chat.consumers.background import start_task
from chatplatform.chat.consumers.connection import CustomerConnection
from chatplatform.chat.protocol import ErrorCode, ServerType, error_frame
from inference.contracts import InferenceResult

logger = logging.getLogger(__name__)


@dataclass
class PendingAnswer:
    """A model answer this socket asked for and is still waiting on."""

    message_id: str
    client_message_id: str
    question: str
    arrival: float  # unix seconds
    received_at: datetime
    suggestions: list[answering.Suggestion]
    first_text_at: float | None = None
    holding_sent: bool = False
    # Whether this socket queued the model task. False for an answer rebuilt on resume (an
    # earlier socket asked) or whose queueing failed: a resend of its question queues it.
    requested_here: bool = False
    # Whether an earlier socket was waiting for it first (rebuilt on resume).
    resumed: bool = False
    timers: list[asyncio.Task[None]] = field(default_factory=list)


class AnswerDelivery(CustomerConnection):
    """Delivery of answers this socket asked for, or resumed from an earlier socket."""

    # Questions whose answer's stream reached this socket: a stream cut short (a suggestion
    # chosen) is closed only where it was shown. Set by the consumer's connect.
    streamed: set[str]

    async def report_failure(self, message_id: str, client_message_id: str) -> None:
        """Tell the customer that an answer failed: while they were away, or again when they
        resend its question."""
        frame = error_frame(
            ErrorCode.ANSWER_FAILED,
            f"The assistant could not answer. {answering.UNAVAILABLE_TEXT}",
            client_message_id or None,
        )
        await self.send_json({**frame, "reply_to": message_id})
        await database_sync_to_async(store.mark_delivered)(store.reply_id_for(message_id))

    async def resume_pending(self, unfinished: store.UnfinishedAnswer) -> None:
        """Wait, on this socket, for an answer an earlier socket asked for: its stream, failure
        or timeout are reported here, with the SLA timers running from the original arrival.

        Once the holding deadline has passed, the holding reply was the earlier socket's to
        send: it sent one, or the answer's first text had gone out before the deadline (the
        database does not record which, so the answer may be streaming right now), or nobody
        was connected then. A holding reply sent now would stand next to a streaming answer
        and be stored as a missed SLA, so only the timeout timer is armed.
        """
        assert self.site is not None
        arrival = unfinished.received_at.timestamp()
        pending = PendingAnswer(
            message_id=unfinished.message_id,
            client_message_id=unfinished.client_message_id,
            question=unfinished.question,
            arrival=arrival,
            received_at=unfinished.received_at,
            suggestions=await answering.suggestions(self.site.id, unfinished.question),
            holding_sent=unfinished.holding_sent or time.time() >= self.holding_at(arrival),
            resumed=True,
        )
        self.pending[pending.message_id] = pending
        self.start_timers(pending)

    def holding_at(self, arrival: float) -> float:
        """When (unix seconds) the holding reply to a question that arrived at `arrival` is due:
        just before the site's SLA deadline."""
        assert self.site is not None
        return arrival + (self.site.sla_ms - config.HOLDING_REPLY_MARGIN_MS) / 1000.0

    def start_timers(self, pending: PendingAnswer) -> None:
        """The SLA guard of one answer: holding reply before the deadline (unless one is no
        longer due), then the timeout."""
        timeout_at = pending.arrival + config.ANSWER_TIMEOUT_S
        pending.timers = [
            start_task(self._timeout_after(pending.message_id, timeout_at), "timeout timer")
        ]
        if not pending.holding_sent:
            holding_at = self.holding_at(pending.arrival)
            pending.timers.append(
                start_task(self._holding_after(pending.message_id, holding_at), "holding timer")
            )

    # --- the SLA guard ------------------------------------------------------------------------

    async def _holding_after(self, message_id: str, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.time()))
        await self.send_holding(message_id)

    async def _timeout_after(self, message_id: str, at: float) -> None:
        """The answer timeout. It is final: the message is closed in Redis, where the worker
        looks before sending its final event, so no answer can follow `answer_timeout`, and the
        generation is cancelled. If the worker closed the message first, its answer (or its
        refusal) is on its way instead, and this socket waits for it a little longer."""
        await asyncio.sleep(max(0.0, at - time.time()))
        if message_id not in self.pending:
            return
        if await limits.close_unanswered(message_id):
            await self.fail(message_id, ErrorCode.ANSWER_TIMEOUT, "The answer took too long.")
            return
        await asyncio.sleep(config.ANSWER_ON_ITS_WAY_S)
        if message_id not in self.pending:
            return  # it came
        frame = await database_sync_to_async(store.stored_answer)(store.reply_id_for(message_id))
        if frame is not None:  # stored while its announcement went to no socket of ours
            self.forget(message_id)
            await self.deliver_whole(frame)
            return
        # The worker concluded but its answer never came (it died in between): say so. The
        # failed row stays failed even if a finalize turns up later (chat/tasks.py).
        await self.fail(message_id, ErrorCode.ANSWER_FAILED, "The assistant could not answer.")

    async def send_holding(self, message_id: str) -> None:
        """Honest holding reply (with the nearest FAQ answers) if no answer text went out yet."""
        pending = self.pending.get(message_id)
        if pending is None or pending.holding_sent or pending.first_text_at is not None:
            return
        assert self.site is not None and self.conversation_id is not None
        pending.holding_sent = True
        text = answering.holding_text(pending.suggestions)
        server_ms = answering.ms_since(pending.arrival)
        await self.send_json(
            {
                "type": ServerType.HOLDING.value,
                "message_id": store.reply_id_for(message_id, "holding"),
                "reply_to": message_id,
                "text": text,
                "suggestions": [s.as_dict() for s in pending.suggestions],
                "ttft_ms": round(server_ms, 2),
            }
        )
        metrics.message_answered("fallback", server_ms, server_ms, server_ms <= self.site.sla_ms)
        await database_sync_to_async(store.save_holding_reply)(
            self.site.id,
            self.conversation_id,
            message_id,
            pending.received_at,
            text,
            server_ms,
            self.site.sla_ms,
        )

    async def fail(self, message_id: str, code: ErrorCode, message: str) -> None:
        """The model answer will not come: say so (with suggestions) and close the records."""
        pending = self.pending.get(message_id)
        if pending is not None:
            await self.send_holding(message_id)
            self.forget(message_id)
        ref = pending.client_message_id if pending is not None else None
        frame = error_frame(code, f"{message} {answering.UNAVAILABLE_TEXT}", ref)
        await self.send_json({**frame, "reply_to": message_id})
        await database_sync_to_async(store.fail_reply)(message_id)

    def forget(self, message_id: str) -> None:
        pending = self.pending.pop(message_id, None)
        if pending is not None:
            for timer in pending.timers:
                if timer is not asyncio.current_task():
                    timer.cancel()

    # --- stream events from inference workers (channel-layer group messages) ------------------

    async def answer_start(self, event: dict[str, Any]) -> None:
        message_id = event["message_id"]
        await self.send_json(
            {
                "type": ServerType.ANSWER_START.value,
                "message_id": store.reply_id_for(message_id),
                "reply_to": message_id,
            }
        )

    async def answer_delayed(self, event: dict[str, Any]) -> None:
        await self.send_holding(event["message_id"])

    async def answer_delta(self, event: dict[str, Any]) -> None:
        message_id = event["message_id"]
        pending = self.pending.get(message_id)
        if pending is not None and pending.first_text_at is None:
            pending.first_text_at = time.time()
        self.streamed.add(message_id)
        await self.send_json(
            {
                "type": ServerType.ANSWER_DELTA.value,
                "message_id": store.reply_id_for(message_id),
                "reply_to": message_id,
                "text": event.get("text", ""),
            }
        )

    async def answer_end(self, event: dict[str, Any]) -> None:
        result = InferenceResult.from_dict(event["result"])
        message_id = result.message_id
        if result.finish_reason == "cancelled" and message_id not in self.pending:
            await self._close_cut_short(result)
            return
        if not result.text:
            if message_id in self.pending:
                await self.fail(message_id, ErrorCode.ANSWER_FAILED, "The model gave no answer.")
            return
        reply_id = store.reply_id_for(message_id)
        pending = self.pending.get(message_id)
        ttft_ms, total_ms = result.ttft_ms, result.total_ms
        if pending is not None and not pending.resumed:
            # What the customer saw, measured here: arrival -> first text sent, -> end sent.
            # (A resumed answer may have started streaming on the earlier socket: the worker's
            # timings, from the same arrival, are the ones to keep.)
            total_ms = answering.ms_since(pending.arrival)
            first = pending.first_text_at or time.time()
            ttft_ms = (first - pending.arrival) * 1000.0
        await self.send_json(
            {
                "type": ServerType.ANSWER_END.value,
                "message_id": reply_id,
                "reply_to": message_id,
                "text": result.text,
                "source": "llm",
                "finish_reason": result.finish_reason,
                "ttft_ms": None if ttft_ms is None else round(ttft_ms, 2),
                "total_ms": round(total_ms, 2),
            }
        )
        self.delivered.add(reply_id)
        self.turns.append(("assistant", result.text))
        if pending is not None and self.site is not None:
            self.forget(message_id)
            sla_met = ttft_ms is not None and ttft_ms <= self.site.sla_ms
            metrics.message_answered("llm", ttft_ms, total_ms, sla_met)
        await database_sync_to_async(store.mark_delivered)(reply_id)

    async def _close_cut_short(self, result: InferenceResult) -> None:
        """A generation stopped because a suggestion was chosen (or nobody was waiting): the
        text this socket already showed stays, marked finished; nothing else is shown."""
        if result.message_id not in self.streamed:
            return
        await self.send_json(
            {
                "type": ServerType.ANSWER_END.value,
                "message_id": store.reply_id_for(result.message_id),
                "reply_to": result.message_id,
                "text": result.text,
                "source": "llm",
                "finish_reason": result.finish_reason,
                "ttft_ms": result.ttft_ms,
                "total_ms": round(result.total_ms, 2),
            }
        )

    async def answer_refused(self, event: dict[str, Any]) -> None:
        await self._worker_failed(event, ErrorCode.MODEL_UNAVAILABLE)

    async def answer_error(self, event: dict[str, Any]) -> None:
        await self._worker_failed(event, ErrorCode.ANSWER_FAILED)

    async def _worker_failed(self, event: dict[str, Any], code: ErrorCode) -> None:
        message_id = event["message_id"]
        if message_id not in self.pending:
            return  # another socket of this conversation asked; it reports the failure
        logger.warning("chat: answer to %s failed: %s", message_id, event)
        if event.get("code") == ErrorCode.OVERLOADED.value:  # a worker shed it
            metrics.rejected(ErrorCode.OVERLOADED.value)
            await self.fail(message_id, ErrorCode.OVERLOADED, answering.OVERLOADED_TEXT)
            return
        await self.fail(message_id, code, "The assistant could not answer.")

    async def answer_stored(self, event: dict[str, Any]) -> None:
        """The finalize task persisted an answer: deliver it if this socket missed its stream."""
        reply_id = event["reply_id"]
        if reply_id in self.delivered:
            return
        frame = await database_sync_to_async(store.stored_answer)(reply_id)
        if frame is not None:
            self.forget(str(frame["reply_to"]))
            await self.deliver_whole(frame)

    # --- sending ------------------------------------------------------------------------------

    async def deliver_whole(self, frame: dict[str, Any]) -> None:
        """Send a stored, finished answer whole and record that the customer has it."""
        reply_id = str(frame["message_id"])
        await self.send_json(frame)
        self.delivered.add(reply_id)
        await database_sync_to_async(store.mark_delivered)(reply_id)
