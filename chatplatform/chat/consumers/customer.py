"""The customer's frames: messages (validated, rate-limited, stored, answered from the cache
or asked of the model, or left to the agent holding the conversation), feedback, and the
handoff frames (handoff.py); `ChatConsumer` is the widget's socket."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from channels.db import database_sync_to_async

from chatplatform import metrics
from chatplatform.chat import answering, config, limits, store
from chatplatform.chat.consumers.delivery import PendingAnswer
from chatplatform.chat.consumers.handoff import HELD
from chatplatform.chat.consumers.suggestions import CustomerSuggestions
from chatplatform.chat.protocol import (
    ChatMessage,
    ChooseSuggestion,
    ClientCommand,
    Contact,
    DeclineSuggestions,
    ErrorCode,
    Feedback,
    Handoff,
    Hello,
    Ping,
    ProtocolError,
    Rating,
    ServerType,
)
from chatplatform.chat.writer import writer
from chatplatform.suggestions import offers

logger = logging.getLogger(__name__)


class ChatConsumer(CustomerSuggestions):
    """The widget's socket at /ws/chat/: acts on each customer frame."""

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
            await self.request_handoff()
        elif isinstance(command, Contact):
            await self.leave_contact(command)
        elif isinstance(command, Rating):
            await self.rate(command)
        elif isinstance(command, ChooseSuggestion):
            await self.choose_suggestion(command, arrival)
        elif isinstance(command, DeclineSuggestions):
            await self.decline_suggestions(command, arrival)

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
        # While an agent holds the conversation the message is theirs: no cache, no model.
        to_agent = self.handoff_status == HELD
        result = None
        if self.site.cache_enabled and not to_agent:
            result = await answering.lookup(
                self.site.id, message.text, self.conversation_id, history
            )
            metrics.cache_lookup(result.tier, result.hit)
        cached = None
        offer = None
        if result is not None and result.hit:
            cached = store.CachedAnswer(
                text=result.answer,
                faq_id=result.faq_id,
                entry_id=result.entry_id,
                confidence=result.confidence,
                arrival=arrival,
            )
        elif result is not None:
            offer = await self.offer_for(message.text, result)
        message_id, created = await writer().save(
            store.NewQuestion(
                site_id=self.site.id,
                conversation_id=self.conversation_id,
                client_message_id=message.client_message_id,
                text=message.text,
                received_at=received_at,
                cached=cached,
                sla_ms=self.site.sla_ms,
                to_agent=to_agent,
                offer=offer,
            )
        )
        stored = None
        failed = False
        # suggest_first: the model waits for the customer's word on the suggestions.
        waiting = created and offer is not None and offer.waiting
        if created:
            await self.pass_over_waiting(message_id)
        else:
            # A resend after a reconnect: its answer is finished (send it again), failed (say so
            # again: queued again, a worker would skip it and only a late timeout would come)
            # or still to come.
            reply_id = store.reply_id_for(message_id)
            stored = await database_sync_to_async(store.stored_answer)(reply_id)
            if stored is None:
                failed = await database_sync_to_async(store.reply_failed)(reply_id)
            if stored is None and not failed and not to_agent:
                waiting = await database_sync_to_async(offers.is_waiting)(message_id)
            if stored is None and not failed and not to_agent and not waiting:
                # Sent to an agent first (no answer row), now resent after a hand-back.
                to_agent = not await database_sync_to_async(store.reply_exists)(reply_id)
        if waiting:
            if self.turns[-1:] != [("user", message.text)]:
                self.turns.append(("user", message.text))
        elif stored is None and not failed and not to_agent and (cached is None or not created):
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
        elif created and offer is not None:
            await self.show_suggestions(message_id, message.client_message_id, offer)
        elif not created and not to_agent:
            await self.resend_suggestions(message_id)
        await self.tell_agents()

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
            site_faqs=await answering.site_faq_head(self.site.id),
        )
        try:
            await answering.send_inference(request)
        except answering.InferenceOverloadedError as error:
            logger.warning("chat: question %s shed: %s", message_id, error)
            metrics.rejected(ErrorCode.OVERLOADED.value)
            await self.fail(message_id, ErrorCode.OVERLOADED, answering.OVERLOADED_TEXT)
            return
        pending.requested_here = True

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
