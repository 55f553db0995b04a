"""The websocket consumer at /ws/chat/: one socket per widget, protocol v1 (docs/protocol.md).

Per customer message: validate, rate-limit, persist, ack, look up the cache; a hit is sent whole,
a miss becomes an inference task whose stream arrives as channel-layer group messages (handled
by the methods named after their type: `answer_start`, `answer_delta`, ...) and is relayed.
A holding reply goes out inside the SLA when no token has come by then. Every client error is
`{type: "error", code, message}` and the socket stays open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from chatplatform import metrics
from chatplatform.chat import answering, config, limits, store
from chatplatform.chat.protocol import (
    ChatMessage,
    ClientCommand,
    ErrorCode,
    Feedback,
    Handoff,
    Hello,
    Ping,
    ProtocolError,
    ServerType,
    error_frame,
    parse_client_frame,
)
from chatplatform.chat.writer import writer
from inference.contracts import InferenceResult, conversation_group

logger = logging.getLogger(__name__)

# Close code for refusing a socket outright (private range 4000-4999; mirrors HTTP 429).
CLOSE_TOO_MANY_CONNECTIONS = 4429
# Close code for a socket silent longer than config.CONNECTION_COUNT_TTL_S (mirrors HTTP 408).
CLOSE_IDLE = 4408
# Background tasks that must outlive the consumer (cancellation after the grace period).
_background: set[asyncio.Task[None]] = set()


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


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.client_ip: str = (self.scope.get("client") or ["unknown"])[0] or "unknown"
        self.site: store.SiteInfo | None = None
        self.site_key = ""
        self.site_read_at = 0.0  # monotonic time `site` was read
        self.conversation_id: str | None = None
        self.turns: list[tuple[str, str]] = []  # recent (role, text), oldest first
        self.pending: dict[str, PendingAnswer] = {}
        self.delivered: set[str] = set()  # answer ids this socket has sent whole
        self.counted = False
        self.last_frame_at = time.monotonic()
        self.idle_watch: asyncio.Task[None] | None = None
        # Count the socket before accepting it, so that once a client sees its socket open, the
        # count includes it (the next socket from that address is judged with this one in).
        allowed = await limits.open_connection(self.client_ip, self.channel_name)
        await self.accept()
        if not allowed:
            await self.send_error(
                ErrorCode.TOO_MANY_CONNECTIONS, "Too many open chats from your network."
            )
            await self.close(code=CLOSE_TOO_MANY_CONNECTIONS)
            return
        self.counted = True
        metrics.connection_opened()
        self.idle_watch = _start_task(self._close_when_idle(), "idle watch")

    async def disconnect(self, code: int) -> None:
        if not self.counted:
            return
        if self.idle_watch is not None:
            self.idle_watch.cancel()
        metrics.connection_closed()
        await limits.close_connection(self.client_ip, self.channel_name)
        if self.conversation_id is not None:
            await self.channel_layer.group_discard(
                conversation_group(self.conversation_id), self.channel_name
            )
            await limits.leave_conversation(self.conversation_id, self.channel_name)
            for pending in self.pending.values():
                for timer in pending.timers:
                    timer.cancel()
            if self.pending:
                task = asyncio.create_task(
                    _cancel_if_abandoned(self.conversation_id, list(self.pending))
                )
                _background.add(task)
                task.add_done_callback(_background.discard)

    # --- client frames ------------------------------------------------------------------------

    async def _close_when_idle(self) -> None:
        """Close the socket once the client has been silent for CONNECTION_COUNT_TTL_S.

        By then its entry in the per-address connection count has lapsed: left open, a silent
        socket would no longer count, and a client could hold any number of them. Only frames
        that refreshed that entry count as traffic (invalid frames do not).
        """
        while True:
            silent_for = time.monotonic() - self.last_frame_at
            if silent_for >= config.CONNECTION_COUNT_TTL_S:
                logger.info("chat: closing a socket silent for %.0f s", silent_for)
                await self.close(code=CLOSE_IDLE)
                return
            await asyncio.sleep(config.CONNECTION_COUNT_TTL_S - silent_for)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Run the handler of a channel-layer event with the same guard as client frames.

        An exception escaping a handler would make daphne close the socket (1011) without
        `disconnect` ever running, leaking its counters: log it, tell the client, stay open.
        A pending answer the failure concerns is still closed by its timeout timer.
        """
        if message["type"].startswith("websocket."):
            await super().dispatch(message)
            return
        try:
            await super().dispatch(message)
        except Exception:
            logger.exception("chat: failed to handle the event %s", message.get("type"))
            await self.send_error(ErrorCode.INTERNAL, "Something went wrong on our side.")

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        arrival = time.time()
        try:
            if text_data is None:
                raise ProtocolError(
                    ErrorCode.BINARY_NOT_SUPPORTED, "Binary frames are not accepted; send JSON."
                )
            await self.handle(parse_client_frame(text_data), arrival)
        except ProtocolError as error:
            metrics.rejected(error.code.value)
            await self.send_json(error.frame())
        except Exception:
            # The socket must stay usable whatever went wrong on our side; log it loudly.
            logger.exception("chat: failed to handle a frame")
            await self.send_error(ErrorCode.INTERNAL, "Something went wrong on our side; retry.")

    async def handle(self, command: ClientCommand, arrival: float) -> None:
        if not isinstance(command, ChatMessage):
            # Messages have their own, per-conversation limits (in `message`).
            await self.check_frame_rate()
        if isinstance(command, Ping):
            await self.send_json({"type": ServerType.PONG.value})
        elif isinstance(command, Hello):
            await self.hello(command)
        elif self.site is None or self.conversation_id is None:
            raise ProtocolError(ErrorCode.HELLO_REQUIRED, "Say hello with your site key first.")
        elif isinstance(command, ChatMessage):
            await self.refresh_site(command.client_message_id)
            await self.message_or_internal_error(command, arrival)
        elif isinstance(command, Feedback):
            await self.feedback(command)
        elif isinstance(command, Handoff):
            await database_sync_to_async(store.request_handoff)(self.conversation_id)
            await self.send_json({"type": ServerType.HANDOFF_OK.value})

    async def active_site(self, site_key: str, ref: str | None = None) -> store.SiteInfo:
        """The site of this widget key, if it is active and allows this page; `ref` names the
        client frame a refusal answers."""
        site = await database_sync_to_async(store.find_site)(site_key)
        if site is None:
            raise ProtocolError(ErrorCode.UNKNOWN_SITE, "No active site has this widget key.", ref)
        if not site.allows_origin(self.origin()):
            raise ProtocolError(
                ErrorCode.ORIGIN_NOT_ALLOWED,
                "This site does not allow the widget on this page.",
                ref,
            )
        return site

    async def refresh_site(self, client_message_id: str) -> None:
        """Re-read the site's settings when they are older than SITE_REFRESH_S: an admin who
        deactivated the site, or removed this page's origin, since the chat opened stops open
        widgets too. The message is refused before it is stored, so nothing is half-written."""
        if time.monotonic() - self.site_read_at < config.SITE_REFRESH_S:
            return
        self.site = await self.active_site(self.site_key, client_message_id)
        self.site_read_at = time.monotonic()

    async def check_frame_rate(self) -> None:
        """Refuse a hello, feedback, handoff or ping over the per-socket or per-address limit
        (this also marks the socket live; see limits.allow_frame)."""
        broken = await limits.allow_frame(self.client_ip, self.channel_name, self.conversation_id)
        self.last_frame_at = time.monotonic()  # the socket's entries were refreshed
        if broken is not None:
            raise ProtocolError(
                ErrorCode.RATE_LIMITED, "Too many requests; wait a minute and try again."
            )

    async def hello(self, hello: Hello) -> None:
        """Join the site's conversation (new or resumed) and greet.

        The socket's state is set only once every step has succeeded, so a hello that failed
        half-way (the database or Redis briefly unavailable) can simply be sent again.
        """
        if self.conversation_id is not None:
            raise ProtocolError(ErrorCode.ALREADY_HELLO, "This socket already joined a chat.")
        site = await self.active_site(hello.site_key)
        conversation_id, resumed = await database_sync_to_async(store.open_conversation)(
            site.id, hello.conversation_id, hello.visitor_id, self.client_ip
        )
        # Join the group before reading what was missed, so that an answer finished in
        # between is either in that read or announced to this socket.
        group = conversation_group(conversation_id)
        await self.channel_layer.group_add(group, self.channel_name)
        try:
            await limits.join_conversation(conversation_id, self.channel_name)
            welcome = await database_sync_to_async(_welcome_data)(site.id, conversation_id, resumed)
        except Exception:
            await self.channel_layer.group_discard(group, self.channel_name)
            await limits.leave_conversation(conversation_id, self.channel_name)
            raise
        self.site, self.conversation_id, self.turns = site, conversation_id, welcome.turns
        self.site_key, self.site_read_at = hello.site_key, time.monotonic()
        await self.send_json(
            {
                "type": ServerType.WELCOME.value,
                "v": config.PROTOCOL_VERSION,
                "conversation_id": conversation_id,
                "resumed": resumed,
                "greeting": site.greeting,
                "quick_replies": welcome.quick_replies,
                "sla_ms": site.sla_ms,
                "max_message_chars": config.MAX_MESSAGE_CHARS,
            }
        )
        for frame in welcome.missed:
            await self.deliver_whole(frame)
        for message_id, client_message_id in welcome.failures:
            await self.report_failure(message_id, client_message_id)
        for unfinished in welcome.unfinished:
            await self.resume_pending(unfinished)

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

    async def message_or_internal_error(self, message: ChatMessage, arrival: float) -> None:
        """`message`, with a failure on our side reported against the message (`ref`), so the
        client knows which one to send again."""
        try:
            await self.message(message, arrival)
        except ProtocolError:
            raise
        except Exception as error:
            logger.exception("chat: failed to handle message %s", message.client_message_id)
            raise ProtocolError(
                ErrorCode.INTERNAL,
                "Something went wrong on our side; send the message again.",
                message.client_message_id,
            ) from error

    async def message(self, message: ChatMessage, arrival: float) -> None:
        """Validate, look up the cache, persist (one commit), ack, then answer or ask the model.

        The cache lookup comes before the commit so the question and its answer's row are
        written together; the ack still follows the commit, so an acked message is stored.
        """
        assert self.site is not None and self.conversation_id is not None
        broken = await limits.allow_message(self.conversation_id, self.client_ip, self.channel_name)
        self.last_frame_at = time.monotonic()  # the socket's entries were refreshed
        if broken is not None:
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                "You are sending messages too quickly; wait a minute and try again.",
                message.client_message_id,
            )
        received_at = datetime.fromtimestamp(arrival, tz=UTC)
        history = [text for role, text in self.turns if role == "user"]
        result = None
        if self.site.cache_enabled:
            result = await answering.lookup(
                self.site.id, message.text, self.conversation_id, history
            )
            metrics.cache_lookup(result.tier, result.hit)
        cached = None
        if result is not None and result.hit:
            cached = store.CachedAnswer(
                text=result.answer,
                faq_id=result.faq_id,
                entry_id=result.entry_id,
                confidence=result.confidence,
                arrival=arrival,
            )
        message_id, created = await writer().save(
            store.NewQuestion(
                site_id=self.site.id,
                conversation_id=self.conversation_id,
                client_message_id=message.client_message_id,
                text=message.text,
                received_at=received_at,
                cached=cached,
                sla_ms=self.site.sla_ms,
            )
        )
        stored = None
        failed = False
        if not created:
            # A resend after a reconnect: its answer is finished (send it again), failed (say so
            # again: queued again, a worker would skip it and only a late timeout would come)
            # or still to come.
            reply_id = store.reply_id_for(message_id)
            stored = await database_sync_to_async(store.stored_answer)(reply_id)
            if stored is None:
                failed = await database_sync_to_async(store.reply_failed)(reply_id)
        if stored is None and not failed and (cached is None or not created):
            # The model's task is queued before the ack: a crash in between leaves the message
            # un-acked, the widget resends it, and it is queued again here (workers answer a
            # message id once, so a second task for it is harmless).
            await self.ask_model(message, message_id, received_at, arrival)
        await self.send_json(
            {
                "type": ServerType.ACK.value,
                "client_message_id": message.client_message_id,
                "message_id": message_id,
                "duplicate": not created,
            }
        )
        if stored is not None:
            await self.deliver_whole(stored)
        elif failed:
            self.forget(message_id)  # its failure event, if still on its way, is reported here
            await self.report_failure(message_id, message.client_message_id)
        elif created and cached is not None:
            self.turns.append(("user", message.text))
            await self.answer_from_cache(message_id, arrival, cached)

    async def answer_from_cache(
        self, message_id: str, arrival: float, cached: store.CachedAnswer
    ) -> None:
        assert self.site is not None
        reply_id = store.reply_id_for(message_id)
        server_ms = answering.ms_since(arrival)
        source = "faq" if cached.faq_id is not None else "cache"
        await self.send_json(
            {
                "type": ServerType.ANSWER.value,
                "message_id": reply_id,
                "reply_to": message_id,
                "text": cached.text,
                "source": source,
                "ttft_ms": round(server_ms, 2),
                "total_ms": round(server_ms, 2),
            }
        )
        self.delivered.add(reply_id)
        self.turns.append(("assistant", cached.text))
        metrics.message_answered(source, server_ms, server_ms, server_ms <= self.site.sla_ms)

    async def ask_model(
        self, message: ChatMessage, message_id: str, received_at: datetime, arrival: float
    ) -> None:
        assert self.site is not None and self.conversation_id is not None
        pending = self.pending.get(message_id)
        if pending is not None and pending.requested_here:
            return  # already asked on this socket
        # A question resumed from the database is already the last turn.
        if self.turns[-1:] != [("user", message.text)]:
            self.turns.append(("user", message.text))
        if pending is None:
            found = await answering.suggestions(self.site.id, message.text)
            pending = PendingAnswer(
                message_id=message_id,
                client_message_id=message.client_message_id,
                question=message.text,
                arrival=arrival,
                received_at=received_at,
                suggestions=found,
            )
            self.pending[message_id] = pending
            self.start_timers(pending)
        request = answering.inference_request(
            conversation_id=self.conversation_id,
            message_id=message_id,
            site_id=self.site.id,
            instructions=self.site.instructions,
            grounding=pending.suggestions,
            history=self.turns[-config.PROMPT_HISTORY_TURNS - 1 : -1],
            question=message.text,
            arrival=arrival,
            sla_ms=self.site.sla_ms,
        )
        await answering.send_inference(request)
        pending.requested_here = True

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
            _start_task(self._timeout_after(pending.message_id, timeout_at), "timeout timer")
        ]
        if not pending.holding_sent:
            holding_at = self.holding_at(pending.arrival)
            pending.timers.append(
                _start_task(self._holding_after(pending.message_id, holding_at), "holding timer")
            )

    async def feedback(self, feedback: Feedback) -> None:
        assert self.conversation_id is not None
        change = await database_sync_to_async(store.record_feedback)(
            self.conversation_id, feedback.message_id, feedback.positive
        )
        if change is None:
            raise ProtocolError(ErrorCode.UNKNOWN_MESSAGE, "No answer with this id in this chat.")
        value = 1 if feedback.positive else -1
        if change.entry_id and change.previous != value:
            # Only a change reaches the cache, as one vote: a first click counts, and a flip
            # (down then up) counts the opposite vote, which cancels the earlier one in the
            # entry's net score. Repeated clicks cannot flag an entry site-wide.
            cache = await answering.get_cache()
            await cache.arecord_feedback(change.entry_id, feedback.positive)
        await self.send_json(
            {"type": ServerType.FEEDBACK_OK.value, "message_id": feedback.message_id}
        )

    # --- the SLA guard ------------------------------------------------------------------------

    async def _holding_after(self, message_id: str, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.time()))
        await self.send_holding(message_id)

    async def _timeout_after(self, message_id: str, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.time()))
        if message_id in self.pending:
            await self.fail(message_id, ErrorCode.ANSWER_TIMEOUT, "The answer took too long.")

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

    async def answer_refused(self, event: dict[str, Any]) -> None:
        await self._worker_failed(event, ErrorCode.MODEL_UNAVAILABLE)

    async def answer_error(self, event: dict[str, Any]) -> None:
        await self._worker_failed(event, ErrorCode.ANSWER_FAILED)

    async def _worker_failed(self, event: dict[str, Any], code: ErrorCode) -> None:
        message_id = event["message_id"]
        if message_id not in self.pending:
            return  # another socket of this conversation asked; it reports the failure
        logger.warning("chat: answer to %s failed: %s", message_id, event)
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

    async def send_json(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(frame, ensure_ascii=False))

    async def send_error(self, code: ErrorCode, message: str) -> None:
        metrics.rejected(code.value)
        await self.send_json(error_frame(code, message))

    def origin(self) -> str | None:
        for name, value in self.scope.get("headers", []):
            if name == b"origin":
                return value.decode("latin-1")
        return None


@dataclass(frozen=True)
class WelcomeData:
    quick_replies: list[dict[str, object]]
    turns: list[tuple[str, str]]  # recent (role, text) of a resumed conversation
    missed: list[dict[str, object]]  # finished answers the customer has not received
    failures: list[tuple[str, str]]  # (message id, client_message_id) of unreported failures
    unfinished: list[store.UnfinishedAnswer]  # answers still to come


def _welcome_data(site_id: int, conversation_id: str, resumed: bool) -> WelcomeData:
    """What a hello needs from the database (one thread hop)."""
    replies = store.quick_replies(site_id, config.QUICK_REPLY_COUNT)
    if not resumed:
        return WelcomeData(replies, [], [], [], [])
    return WelcomeData(
        quick_replies=replies,
        turns=store.conversation_turns(conversation_id, config.PROMPT_HISTORY_TURNS),
        missed=store.undelivered_answers(conversation_id),
        failures=store.unreported_failures(conversation_id),
        unfinished=store.unfinished_answers(conversation_id),
    )


def _start_task(coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """A background task of a consumer whose failure is logged (nobody awaits it)."""
    task = asyncio.create_task(coroutine, name=name)
    task.add_done_callback(_log_failure)
    return task


def _log_failure(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        logger.error("chat: the %s failed", task.get_name(), exc_info=error)


async def _cancel_if_abandoned(conversation_id: str, message_ids: list[str]) -> None:
    """After the grace period, stop generating answers nobody is connected to receive."""
    await asyncio.sleep(config.CANCEL_GRACE_S)
    if await limits.someone_present(conversation_id):
        return
    for message_id in message_ids:
        await limits.request_cancel(message_id)
