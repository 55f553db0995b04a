"""CPU-queue task: finalize a model answer once the inference worker is done with it.

Persists the answer on its Message row (text, timings, SLA outcome, tokens, GPU seconds),
offers it to the cache's admission policy, and tells the conversation's sockets that the answer
is stored (a socket that missed the stream, e.g. a customer who reconnected, delivers it then).
Idempotent: the row is updated only while not yet finished, so a redelivered task is a no-op.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from asgiref.sync import async_to_sync
from celery import shared_task
from channels.layers import get_channel_layer
from django.db import OperationalError, transaction

from chatplatform.agents import events as agent_events
from chatplatform.chat.store import reply_id_for
from chatplatform.chat.visitors import admission_evidence
from chatplatform.conversations.models import Conversation, Message
from chatplatform.suggestions.savings import settle_generation
from inference.contracts import InferenceResult, TaskName, conversation_group

logger = logging.getLogger(__name__)

# Complete answers only: a cut-off ("length") or cancelled answer must never be served again.
CACHEABLE_FINISH_REASONS = frozenset({"stop"})
# SQLite under several writers may still time out on a lock; that passes, so retry it.
MAX_RETRIES = 5


@shared_task(
    name=TaskName.FINALIZE_ANSWER.value,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=MAX_RETRIES,
)
def finalize_answer(result_data: dict) -> str:
    """Persist one InferenceResult; returns what happened ("stored", "duplicate", ...)."""
    result = InferenceResult.from_dict(result_data)
    reply_id = reply_id_for(result.message_id)
    outcome, offer = persist_result(result, reply_id)
    if outcome != "duplicate" and result.site_id.isdigit():
        settle_generation(result, int(result.site_id))  # what a chosen suggestion saved
    if outcome != "stored":
        return outcome
    if result.text and result.finish_reason in CACHEABLE_FINISH_REASONS and offer is not None:
        offer_to_cache(result, offer)
    layer = get_channel_layer()
    async_to_sync(layer.group_send)(
        conversation_group(result.conversation_id),
        {"type": "answer.stored", "reply_id": reply_id},
    )
    agent_events.bot_answer_stored(int(result.site_id), result.conversation_id)
    return outcome


@dataclass(frozen=True)
class CacheOffer:
    """What the cache's admission policy needs to know about the question an answer answers."""

    question: str
    # Who asked, by evidence the server trusts: a visitor the site vouched for, else the
    # client's address (chat/visitors.py); never the widget's self-chosen visitor id.
    visitor: str
    # The conversation's first customer message: the model answered it without history, so
    # the answer may suit other customers (a later turn's answer may lean on earlier ones).
    first_turn: bool


def persist_result(result: InferenceResult, reply_id: str) -> tuple[str, CacheOffer | None]:
    """Write the result onto the answer row; returns (outcome, what to offer the cache)."""
    with transaction.atomic():
        reply = (
            Message.objects.select_related("site", "in_reply_to", "conversation")
            .filter(pk=reply_id)
            .select_for_update()
            .first()
        )
        if reply is None:
            logger.error("finalize: no answer row %s for message %s", reply_id, result.message_id)
            return "unknown_message", None
        if reply.state in (Message.State.DONE, Message.State.FAILED) and reply.text:
            return "duplicate", None
        arrival = reply.received_at
        ok = bool(result.text) and result.finish_reason not in ("error", "cancelled")
        if ok and reply.state == Message.State.FAILED:
            # The customer was told this answer failed (or timed out): that stays true; a
            # late answer is neither stored nor announced (docs/protocol.md).
            logger.info("finalize: answer to %s came after it was failed", result.message_id)
            return "closed", None
        # Only the columns this task owns: `delivered` is the consumer's and may already be set.
        Message.objects.filter(pk=reply_id).update(
            text=result.text,
            state=Message.State.DONE if ok else Message.State.FAILED,
            first_token_at=_after(arrival, result.ttft_ms),
            completed_at=_after(arrival, result.total_ms),
            ttft_ms=result.ttft_ms,
            total_ms=result.total_ms,
            sla_met=result.ttft_ms is not None and result.ttft_ms <= reply.site.sla_ms,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            gpu_seconds=result.gpu_seconds,
        )
        Message.objects.filter(pk=result.message_id).update(state=Message.State.DONE)
    offer = cache_offer(reply.in_reply_to, reply.conversation) if reply.in_reply_to else None
    return ("stored" if ok else "failed"), offer


def cache_offer(question: Message, conversation: Conversation) -> CacheOffer:
    earlier_questions = (
        Message.objects.filter(
            conversation_id=conversation.pk,
            role=Message.Role.CUSTOMER,
            received_at__lte=question.received_at,
        )
        .exclude(pk=question.pk)
        .exists()
    )
    return CacheOffer(
        question=question.text,
        visitor=admission_evidence(
            conversation.visitor_id, conversation.visitor_verified, conversation.client_ip
        ),
        first_turn=not earlier_questions,
    )


def offer_to_cache(result: InferenceResult, offer: CacheOffer) -> None:
    from chatplatform.semanticcache.service import get_cache

    state = get_cache().offer_generated(
        result.site_id,
        offer.question,
        result.text,
        offer.visitor,
        first_turn=offer.first_turn,
        grounding=result.grounding,
    )
    logger.info("finalize: answer to %s offered to the cache: %s", result.message_id, state)


def _after(start: datetime, ms: float | None) -> datetime | None:
    if ms is None:
        return None
    return start.astimezone(UTC) + timedelta(milliseconds=ms)
