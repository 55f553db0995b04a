"""Database side of "did you mean": offers stored with their question, a customer's choice or
"none of these", and what a returning customer must see again.

Small synchronous functions, each one job, called by the chat consumer through
`database_sync_to_async`. Refusals are `ProtocolError`s with the stable codes of
docs/protocol.md; a refused request changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from chatplatform.chat.protocol import ErrorCode, ProtocolError, ServerType
from chatplatform.chat.store import answer_frame, reply_id_for
from chatplatform.chat.visitors import admission_evidence
from chatplatform.conversations.models import Message
from chatplatform.faq.models import FAQ
from chatplatform.suggestions import learning
from chatplatform.suggestions.models import SuggestionOffer

logger = logging.getLogger(__name__)

# Kind of the answer row a chosen suggestion creates (store.reply_id_for): beside the model's
# answer ("answer") and the holding reply ("holding") of the same question.
CHOICE = "choice"
# Finished model answers of the site whose GPU time estimates what a cancelled one would have
# cost: enough to average out answer lengths, recent enough to follow model changes.
GPU_ESTIMATE_ANSWERS = 100


def suggestions_frame(
    question_id: str,
    client_message_id: str,
    faqs: Iterable[tuple[int, str]],
    waiting: bool,
) -> dict[str, object]:
    """The `suggestions` frame of a question: (faq_id, question) best first."""
    return {
        "type": ServerType.SUGGESTIONS.value,
        "reply_to": question_id,
        "client_message_id": client_message_id,
        "suggestions": [{"faq_id": faq_id, "question": question} for faq_id, question in faqs],
        "waiting": waiting,
    }


def _frame_of(offer: SuggestionOffer) -> dict[str, object]:
    faqs = [(int(item["faq_id"]), str(item["question"])) for item in offer.faqs]
    return suggestions_frame(
        str(offer.question_id), offer.question.client_message_id, faqs, offer.waiting
    )


def offer_frame(question_id: str) -> dict[str, object] | None:
    """The suggestions frame of a question whose offer is still open (nothing chosen or said)."""
    offer = (
        SuggestionOffer.objects.select_related("question")
        .filter(question_id=question_id, outcome=SuggestionOffer.Outcome.SHOWN)
        .first()
    )
    if offer is None:
        return None
    return _frame_of(offer)


def open_offer_frames(conversation_id: str) -> list[dict[str, object]]:
    """Suggestions a returning customer may still act on, oldest first: those of questions
    waiting for a choice, and those of questions whose model answer is still to come."""
    pending_replies = Message.objects.filter(
        conversation_id=conversation_id,
        role=Message.Role.ASSISTANT,
        source=Message.Source.LLM,
        state__in=(Message.State.PENDING, Message.State.STREAMING),
    ).values("in_reply_to_id")
    offers = (
        SuggestionOffer.objects.select_related("question")
        .filter(conversation_id=conversation_id, outcome=SuggestionOffer.Outcome.SHOWN)
        .filter(Q(waiting=True) | Q(question_id__in=pending_replies))
        .order_by("received_at")
    )
    return [_frame_of(offer) for offer in offers]


@dataclass(frozen=True)
class Choice:
    """A suggestion chosen: the FAQ's answer (stored, to send now) and what to stop."""

    frame: dict[str, object]  # the `answer` frame of the FAQ's current answer
    reply_id: str
    text: str
    # The model's answer to the question was still to come (running or queued): stop it.
    cancel_model: bool
    ttft_ms: float
    sla_met: bool


def choose(
    conversation_id: str,
    question_id: str,
    faq_id: int,
    arrival: float,
    sla_ms: int,
) -> Choice:
    """Answer the question with the FAQ the customer chose among its suggestions.

    Refused (nothing changes) when the question is not one of this conversation's or had no
    suggestions (`unknown_message`), the FAQ was not among them (`not_suggested`; an FAQ of
    another site never is), a suggestion was chosen already (`already_chosen`), or the FAQ
    was deleted, deactivated or moved to another site since (`suggestion_gone`).
    """
    with transaction.atomic():
        offer = (
            SuggestionOffer.objects.select_for_update()
            .select_related("question", "conversation", "site")
            .filter(question_id=question_id, conversation_id=conversation_id)
            .first()
        )
        if offer is None:
            raise ProtocolError(
                ErrorCode.UNKNOWN_MESSAGE, "No question with suggestions has this id in this chat."
            )
        if faq_id not in offer.shown_faq_ids():
            raise ProtocolError(ErrorCode.NOT_SUGGESTED, "That answer was not suggested here.")
        if offer.outcome == SuggestionOffer.Outcome.CHOSEN:
            raise ProtocolError(
                ErrorCode.ALREADY_CHOSEN, "A suggested answer was already chosen for this."
            )
        faq = FAQ.objects.filter(pk=faq_id, site_id=offer.site_id, is_active=True).first()
        if faq is None:
            raise ProtocolError(
                ErrorCode.SUGGESTION_GONE, "That answer is no longer available; ask again."
            )
        now = timezone.now()
        server_ms = max(0.0, (now.timestamp() - arrival) * 1000.0)
        model_reply = Message.objects.filter(
            pk=reply_id_for(question_id),
            state__in=(Message.State.PENDING, Message.State.STREAMING),
        )
        # The model's answer will be cut short: nobody is to be told it failed (`delivered`
        # also keeps it out of a returning customer's unfinished answers).
        cancel_model = bool(model_reply.update(delivered=True)) and not offer.waiting
        reply = Message.objects.create(
            id=reply_id_for(question_id, CHOICE),
            site_id=offer.site_id,
            conversation_id=conversation_id,
            role=Message.Role.ASSISTANT,
            text=faq.answer,
            source=Message.Source.FAQ,
            state=Message.State.DONE,
            in_reply_to_id=question_id,
            received_at=offer.question.received_at,
            first_token_at=now,
            completed_at=now,
            ttft_ms=server_ms,
            total_ms=server_ms,
            sla_met=server_ms <= sla_ms,
            faq=faq,
        )
        Message.objects.filter(pk=question_id).update(state=Message.State.DONE)
        offer.outcome = SuggestionOffer.Outcome.CHOSEN
        offer.chosen_faq = faq
        offer.decided_at = now
        offer.model_cancelled = cancel_model
        offer.waiting = False
        offer.save(
            update_fields=["outcome", "chosen_faq", "decided_at", "model_cancelled", "waiting"]
        )
        try:
            with transaction.atomic():  # a savepoint: a lost race must not undo the answer
                learning.confirm(offer.site, offer.question.text, faq, _evidence(offer))
        except IntegrityError:
            logger.info("suggestions: a concurrent confirmation of FAQ %s won the race", faq_id)
    return Choice(
        frame=answer_frame(reply),
        reply_id=str(reply.pk),
        text=faq.answer,
        cancel_model=cancel_model,
        ttft_ms=server_ms,
        sla_met=server_ms <= sla_ms,
    )


def _evidence(offer: SuggestionOffer) -> str:
    """Who chose, as the cache's admission counts visitors: a visitor the site vouched for,
    else the conversation's network address ("" when unknown)."""
    conversation = offer.conversation
    return admission_evidence(
        conversation.visitor_id, conversation.visitor_verified, conversation.client_ip
    )


@dataclass(frozen=True)
class Declined:
    """The customer said "none of these": must the model now be asked (suggest_first)?"""

    ask_model: bool
    question: str
    client_message_id: str
    received_at: datetime


def decline(conversation_id: str, question_id: str) -> Declined:
    """The customer said "none of these" to the question's suggestions.

    A waiting question (suggest_first) now goes to the model: its answer row is created here.
    Refused: `unknown_message` (no suggestions for such a question here), `already_chosen`,
    `already_declined`.
    """
    with transaction.atomic():
        offer = (
            SuggestionOffer.objects.select_for_update()
            .select_related("question")
            .filter(question_id=question_id, conversation_id=conversation_id)
            .first()
        )
        if offer is None:
            raise ProtocolError(
                ErrorCode.UNKNOWN_MESSAGE, "No question with suggestions has this id in this chat."
            )
        if offer.outcome == SuggestionOffer.Outcome.CHOSEN:
            raise ProtocolError(
                ErrorCode.ALREADY_CHOSEN, "A suggested answer was already chosen for this."
            )
        if offer.outcome != SuggestionOffer.Outcome.SHOWN:
            raise ProtocolError(
                ErrorCode.ALREADY_DECLINED, "These suggestions were already set aside."
            )
        ask_model = offer.waiting
        if ask_model:
            _create_model_reply(offer)
        offer.outcome = SuggestionOffer.Outcome.DECLINED
        offer.decided_at = timezone.now()
        offer.waiting = False
        offer.save(update_fields=["outcome", "decided_at", "waiting"])
    question = offer.question
    return Declined(ask_model, question.text, question.client_message_id, question.received_at)


def pass_over_waiting(conversation_id: str, except_id: str) -> list[str]:
    """A new message (`except_id`) was stored: the questions still waiting for a choice are
    passed over (the new one goes to the model). Returns their ids."""
    with transaction.atomic():
        offers = list(
            SuggestionOffer.objects.select_for_update()
            .filter(conversation_id=conversation_id, waiting=True)
            .exclude(question_id=except_id)
        )
        ids = [str(offer.question_id) for offer in offers]
        if not ids:
            return []
        SuggestionOffer.objects.filter(question_id__in=ids).update(
            outcome=SuggestionOffer.Outcome.PASSED_OVER, waiting=False, decided_at=timezone.now()
        )
        Message.objects.filter(pk__in=ids).update(state=Message.State.DONE)
    return ids


def has_waiting(conversation_id: str) -> bool:
    return SuggestionOffer.objects.filter(conversation_id=conversation_id, waiting=True).exists()


def is_waiting(question_id: str) -> bool:
    return SuggestionOffer.objects.filter(question_id=question_id, waiting=True).exists()


def _create_model_reply(offer: SuggestionOffer) -> None:
    """The pending row of the model's answer, as store.save_questions makes it for a miss."""
    Message.objects.get_or_create(
        id=reply_id_for(str(offer.question_id)),
        defaults={
            "site_id": offer.site_id,
            "conversation_id": offer.conversation_id,
            "role": Message.Role.ASSISTANT,
            "source": Message.Source.LLM,
            "state": Message.State.PENDING,
            "in_reply_to_id": offer.question_id,
            "received_at": offer.question.received_at,
        },
    )


def settle_cancellation(
    question_id: str, site_id: int, cancelled: bool, gpu_seconds_used: float
) -> float:
    """The model's answer to a question whose suggestion was chosen ended: record what the
    choice saved. Returns the GPU seconds credited.

    Saved = what the site's recent finished model answers cost on average, less what this one
    used before it stopped (never below 0). An answer that finished before the stop took
    effect saved nothing, and is not counted as cancelled.
    """
    with transaction.atomic():
        offer = (
            SuggestionOffer.objects.select_for_update()
            .filter(question_id=question_id, model_cancelled=True, gpu_seconds_saved=0.0)
            .first()
        )
        if offer is None:
            return 0.0
        if not cancelled:
            offer.model_cancelled = False
            offer.save(update_fields=["model_cancelled"])
            return 0.0
        recent = list(
            Message.objects.filter(
                site_id=site_id,
                role=Message.Role.ASSISTANT,
                source=Message.Source.LLM,
                state=Message.State.DONE,
                gpu_seconds__gt=0,
            )
            .order_by("-received_at")
            .values_list("gpu_seconds", flat=True)[:GPU_ESTIMATE_ANSWERS]
        )
        typical = sum(recent) / len(recent) if recent else 0.0
        offer.gpu_seconds_saved = max(0.0, typical - gpu_seconds_used)
        offer.save(update_fields=["gpu_seconds_saved"])
    return offer.gpu_seconds_saved
