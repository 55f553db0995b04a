"""Did-you-mean on the customer's socket: suggestions shown after a cache miss, one click
that answers from the FAQ (and stops the model's generation for that question), "none of
these", and the suggestions a returning customer may still act on.

The site's policy (`Site.suggestion_policy`) decides when: `model_with_suggestions` shows them
while the model answers, `suggest_first` shows them and asks the model only on "none of these"
or when the customer types a new message (that message goes to the model), `model_only` never.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from chatplatform import metrics
from chatplatform.chat import answering, limits, store
from chatplatform.chat.consumers.handoff import CustomerHandoff
from chatplatform.chat.protocol import (
    ChatMessage,
    ChooseSuggestion,
    DeclineSuggestions,
    Hello,
    ServerType,
)
from chatplatform.suggestions import offers
from chatplatform.suggestions.shown import ShownOffer
from chatplatform.tenants.models import SuggestionPolicy
from inference.contracts import conversation_group

SUGGEST_FIRST = SuggestionPolicy.SUGGEST_FIRST.value


class CustomerSuggestions(CustomerHandoff):
    """Suggestions of the customer's missed questions, and what the customer does with them."""

    async def connect(self) -> None:
        # Whether this conversation may hold a question waiting for a choice (suggest_first):
        # only then does a new message look for questions to pass over.
        self.may_have_waiting = False
        self.streamed = set()
        await super().connect()

    async def hello(self, hello: Hello) -> None:
        await super().hello(hello)
        if self.conversation_id is None:
            return  # refused
        for frame in await database_sync_to_async(offers.open_offer_frames)(self.conversation_id):
            self.may_have_waiting |= bool(frame["waiting"])
            await self.send_json(frame)

    async def offer_for(self, question: str, result: Any) -> ShownOffer | None:
        """The suggestions to show for a missed question (None: none, by policy or by the
        cache's floor and guards), and whether the model waits for the customer's word."""
        assert self.site is not None and self.conversation_id is not None
        policy = self.site.suggestion_policy
        if policy not in (SuggestionPolicy.MODEL_WITH_SUGGESTIONS, SUGGEST_FIRST):
            return None
        found = await answering.did_you_mean(self.site.id, question, result)
        if not found:
            return None
        # A message typed while an earlier question still waits goes to the model ("types
        # again"); the earlier one is passed over once this one is stored.
        waiting = policy == SUGGEST_FIRST and not (
            self.may_have_waiting
            and await database_sync_to_async(offers.has_waiting)(self.conversation_id)
        )
        return ShownOffer(policy=policy, faqs=tuple(found), waiting=waiting)

    async def pass_over_waiting(self, except_id: str) -> None:
        """A new message stored: questions still waiting for a choice are passed over."""
        assert self.site is not None and self.conversation_id is not None
        if self.may_have_waiting or self.site.suggestion_policy == SUGGEST_FIRST:
            await database_sync_to_async(offers.pass_over_waiting)(self.conversation_id, except_id)

    async def show_suggestions(
        self, message_id: str, client_message_id: str, offer: ShownOffer
    ) -> None:
        self.may_have_waiting |= offer.waiting
        frame = offers.suggestions_frame(message_id, client_message_id, offer.faqs, offer.waiting)
        await self.send_json(frame)
        metrics.suggestions_shown(offer.policy)

    async def resend_suggestions(self, message_id: str) -> None:
        """A resent question's suggestions, if still open (its ack may have been lost)."""
        frame = await database_sync_to_async(offers.offer_frame)(message_id)
        if frame is not None:
            await self.send_json(frame)

    async def choose_suggestion(self, command: ChooseSuggestion, arrival: float) -> None:
        """Answer at once with the chosen FAQ's current answer, and stop the model's."""
        assert self.site is not None and self.conversation_id is not None
        choice = await database_sync_to_async(offers.choose)(
            self.conversation_id,
            command.message_id,
            command.faq_id,
            arrival,
            self.site.sla_ms,
        )
        if choice.cancel_model:
            # The worker polls this key while generating (and checks it before starting):
            # it stops at its next step and frees the slot.
            await limits.request_cancel(command.message_id)
        self.forget(command.message_id)  # its SLA timers; the model's answer is not awaited
        await self.send_json(choice.frame)
        self.delivered.add(choice.reply_id)
        await database_sync_to_async(store.mark_delivered)(choice.reply_id)
        self.turns.append(("assistant", choice.text))
        metrics.message_answered("faq", choice.ttft_ms, choice.ttft_ms, choice.sla_met)
        metrics.suggestion_chosen(choice.cancel_model)
        # The conversation's other sockets (tabs) show the answer too (answer_stored).
        await self.channel_layer.group_send(
            conversation_group(self.conversation_id),
            {"type": "answer.stored", "reply_id": choice.reply_id},
        )

    async def decline_suggestions(self, command: DeclineSuggestions, arrival: float) -> None:
        """The customer said "none of these": a question waiting for their word now goes to
        the model (its deadline counted from now)."""
        assert self.conversation_id is not None
        declined = await database_sync_to_async(offers.decline)(
            self.conversation_id, command.message_id
        )
        if declined.ask_model:
            question = ChatMessage(declined.client_message_id, declined.question)
            await self.ask_model(question, command.message_id, declined.received_at, arrival)
        await self.send_json(
            {"type": ServerType.SUGGESTIONS_DECLINED.value, "reply_to": command.message_id}
        )
        metrics.suggestions_declined()
