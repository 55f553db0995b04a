"""Database helpers of the chat: small synchronous functions, each one job.

The consumer calls them through `database_sync_to_async`; the CPU-queue task calls them
directly. Every answer row is created with a deterministic id derived from the customer's
message (`reply_id_for`), so the consumer, other tabs of the same conversation and the finalize
task all name the same row without passing ids around, and a redelivered task finds it again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from chatplatform.conversations.models import Conversation, Message
from chatplatform.faq.models import FAQ
from chatplatform.suggestions.models import SuggestionOffer
from chatplatform.suggestions.shown import ShownOffer
from chatplatform.tenants.models import Site, SuggestionPolicy

# Namespace of answer ids: uuid5(namespace, customer message id + kind).
_REPLY_NAMESPACE = uuid.UUID("5b0d7c52-6a0e-4f8e-9a37-2f6f3c1b9e10")


def reply_id_for(message_id: str, kind: str = "answer") -> str:
    """The id of the answer (`kind="answer"`) or holding reply (`"holding"`) to a message."""
    return str(uuid.uuid5(_REPLY_NAMESPACE, f"{message_id}:{kind}"))


@dataclass(frozen=True)
class SiteInfo:
    """What the consumer needs of a site, read at hello and refreshed every
    config.SITE_REFRESH_S while the chat is open (see ChatConsumer.refresh_site)."""

    id: int
    name: str
    greeting: str
    instructions: str
    sla_ms: int
    cache_enabled: bool
    allowed_origins: frozenset[str]
    suggestion_policy: str = SuggestionPolicy.MODEL_WITH_SUGGESTIONS.value

    def allows_origin(self, origin: str | None) -> bool:
        return bool(origin) and origin.rstrip("/").lower() in self.allowed_origins


def find_site(widget_key: str) -> SiteInfo | None:
    site = Site.objects.filter(widget_key=widget_key, is_active=True).first()
    if site is None:
        return None
    return SiteInfo(
        id=site.pk,
        name=site.name,
        greeting=site.greeting,
        instructions=site.instructions(),
        sla_ms=site.sla_ms,
        cache_enabled=site.cache_enabled,
        allowed_origins=frozenset(site.normalized_origins()),
        suggestion_policy=site.suggestion_policy,
    )


def open_conversation(
    site_id: int,
    conversation_id: str | None,
    visitor_id: str,
    client_ip: str | None,
    visitor_verified: bool = False,
) -> tuple[str, bool]:
    """Resume the site's conversation `conversation_id` or start a new one.

    Returns (conversation id, resumed). An unknown id, or one of another site, starts a new
    conversation: the widget simply kept a stale id, and another site's history is never shown.
    """
    if conversation_id is not None:
        exists = Conversation.objects.filter(pk=conversation_id, site_id=site_id).exists()
        if exists:
            return conversation_id, True
    # The visitor id counts for the cache's admission only when the site vouched for it;
    # otherwise the client's address does (chat/visitors.py).
    conversation = Conversation.objects.create(
        site_id=site_id,
        visitor_id=visitor_id,
        visitor_verified=visitor_verified,
        client_ip=client_ip,
    )
    return str(conversation.pk), False


def quick_replies(site_id: int, count: int) -> list[dict[str, object]]:
    """The site's most-answered active FAQs (then the oldest), for quick-reply buttons."""
    faqs = (
        FAQ.objects.filter(site_id=site_id, is_active=True)
        .annotate(served=Count("message", filter=Q(message__role=Message.Role.ASSISTANT)))
        .order_by("-served", "id")[:count]
    )
    return [{"faq_id": faq.pk, "question": faq.question} for faq in faqs]


@dataclass(frozen=True)
class CachedAnswer:
    """A cache hit to store together with the question it answers."""

    text: str
    faq_id: int | None
    entry_id: str | None
    confidence: float
    arrival: float  # unix seconds the question arrived: its server time is measured from here


@dataclass(frozen=True)
class NewQuestion:
    """A customer's message to store (with its answer's row: cached, or pending the model)."""

    site_id: int
    conversation_id: str
    client_message_id: str
    text: str
    received_at: datetime
    cached: CachedAnswer | None
    sla_ms: int
    # An agent holds the conversation: the message is theirs to answer (no answer row).
    to_agent: bool = False
    # "Did you mean" suggestions shown for it (stored with it); a waiting offer (suggest_first)
    # gets no model answer row until the customer says "none of these".
    offer: ShownOffer | None = None


def save_questions(questions: list[NewQuestion]) -> list[tuple[str, bool]]:
    """Persist customer messages and their answers' rows, all in one transaction.

    Returns (message id, created) per question, in order. A client that resends a
    `client_message_id` (after a reconnect) gets the existing message with created=False, so
    a message is never processed twice. One commit for a whole batch is what lets one web
    process take hundreds of messages a second on SQLite (see chat/writer.py).
    """
    try:
        with transaction.atomic():
            return _insert_questions(questions)
    except IntegrityError:
        # Another process stored one of these ids meanwhile: redo them one at a time.
        results = []
        for question in questions:
            try:
                with transaction.atomic():
                    results.extend(_insert_questions([question]))
            except IntegrityError:
                results.append((_existing_id(question), False))
        return results


def _existing_id(question: NewQuestion) -> str:
    return str(
        Message.objects.values_list("pk", flat=True).get(
            conversation_id=question.conversation_id,
            client_message_id=question.client_message_id,
        )
    )


def _insert_questions(questions: list[NewQuestion]) -> list[tuple[str, bool]]:
    existing = {
        (str(conversation), client_id): str(pk)
        for conversation, client_id, pk in Message.objects.filter(
            conversation_id__in={q.conversation_id for q in questions},
            client_message_id__in={q.client_message_id for q in questions},
        ).values_list("conversation_id", "client_message_id", "pk")
    }
    rows: list[Message] = []
    offers: list[SuggestionOffer] = []
    results: list[tuple[str, bool]] = []
    for question in questions:
        key = (question.conversation_id, question.client_message_id)
        if key in existing:  # stored before, or earlier in this very batch
            results.append((existing[key], False))
            continue
        message_id = str(uuid.uuid4())
        existing[key] = message_id
        results.append((message_id, True))
        rows.append(
            Message(
                id=message_id,
                site_id=question.site_id,
                conversation_id=question.conversation_id,
                role=Message.Role.CUSTOMER,
                text=question.text,
                state=(
                    Message.State.DONE
                    if question.cached or question.to_agent
                    else Message.State.PENDING
                ),
                client_message_id=question.client_message_id,
                received_at=question.received_at,
            )
        )
        if question.to_agent:
            continue
        if question.cached is not None:
            rows.append(_cached_answer(question, message_id, question.cached))
        elif question.offer is None or not question.offer.waiting:
            rows.append(_pending_answer(question, message_id))
        if question.offer is not None:
            offers.append(
                question.offer.row(
                    message_id, question.site_id, question.conversation_id, question.received_at
                )
            )
    Message.objects.bulk_create(rows)
    SuggestionOffer.objects.bulk_create(offers)
    # One statement for the batch: its messages arrived within milliseconds of each other.
    Conversation.objects.filter(pk__in={q.conversation_id for q in questions}).update(
        last_activity_at=max(q.received_at for q in questions)
    )
    return results


def _pending_answer(question: NewQuestion, message_id: str) -> Message:
    return Message(
        id=reply_id_for(message_id),
        site_id=question.site_id,
        conversation_id=question.conversation_id,
        role=Message.Role.ASSISTANT,
        source=Message.Source.LLM,
        state=Message.State.PENDING,
        in_reply_to_id=message_id,
        received_at=question.received_at,
    )


def _cached_answer(question: NewQuestion, message_id: str, cached: CachedAnswer) -> Message:
    now = timezone.now()
    server_ms = (now.timestamp() - cached.arrival) * 1000.0
    return Message(
        id=reply_id_for(message_id),
        site_id=question.site_id,
        conversation_id=question.conversation_id,
        role=Message.Role.ASSISTANT,
        text=cached.text,
        source=Message.Source.FAQ if cached.faq_id is not None else Message.Source.CACHE,
        state=Message.State.DONE,
        in_reply_to_id=message_id,
        received_at=question.received_at,
        first_token_at=now,
        completed_at=now,
        ttft_ms=server_ms,
        total_ms=server_ms,
        sla_met=server_ms <= question.sla_ms,
        faq_id=cached.faq_id,
        cache_entry_id=cached.entry_id or "",
        cache_confidence=cached.confidence,
        delivered=True,  # sent right after the commit, on the socket that asked
    )


def conversation_turns(conversation_id: str, limit: int) -> list[tuple[str, str]]:
    """The last `limit` (role, text) turns, oldest first, as the prompt builder takes them.

    An answer shares its question's `received_at`; ordering by role breaks the tie so that
    ("assistant" < "customer") the question comes first once the list is reversed.
    """
    rows = (
        Message.objects.filter(conversation_id=conversation_id)
        .exclude(source=Message.Source.FALLBACK)
        .exclude(text="")
        .order_by("-received_at", "role")
        .values_list("role", "text")[:limit]
    )
    turns = [("user" if role == Message.Role.CUSTOMER else "assistant", t) for role, t in rows]
    return turns[::-1]


def save_holding_reply(
    site_id: int,
    conversation_id: str,
    message_id: str,
    received_at: datetime,
    text: str,
    server_ms: float,
    sla_ms: int,
) -> str:
    """Persist the holding reply already sent (its own record: source fallback)."""
    reply_id = reply_id_for(message_id, "holding")
    now = timezone.now()
    Message.objects.get_or_create(
        id=reply_id,
        defaults={
            "site_id": site_id,
            "conversation_id": conversation_id,
            "role": Message.Role.ASSISTANT,
            "text": text,
            "source": Message.Source.FALLBACK,
            "state": Message.State.DONE,
            "in_reply_to_id": message_id,
            "received_at": received_at,
            "first_token_at": now,
            "completed_at": now,
            "ttft_ms": server_ms,
            "total_ms": server_ms,
            "sla_met": server_ms <= sla_ms,
            "delivered": True,
        },
    )
    return reply_id


def fail_reply(message_id: str) -> None:
    """The model will not answer (refused, failed, timed out) and the customer's socket was
    just told so: close both records. `delivered` marks the failure as reported, so a
    returning customer is not told again (see `unreported_failures`)."""
    reply_id = reply_id_for(message_id)
    Message.objects.filter(pk=reply_id).exclude(state=Message.State.DONE).update(
        state=Message.State.FAILED, completed_at=timezone.now(), delivered=True
    )
    Message.objects.filter(pk=message_id).update(state=Message.State.DONE)


def mark_delivered(reply_id: str) -> None:
    Message.objects.filter(pk=reply_id).update(delivered=True)


def answer_frame(message: Message) -> dict[str, object]:
    """A stored answer as the protocol's whole-answer frame."""
    return {
        "type": "answer",
        "message_id": str(message.pk),
        "reply_to": str(message.in_reply_to_id) if message.in_reply_to_id else None,
        "text": message.text,
        "source": message.source,
        "ttft_ms": message.ttft_ms,
        "total_ms": message.total_ms,
    }


def stored_answer(reply_id: str) -> dict[str, object] | None:
    """The finished answer `reply_id` as a frame, or None while it is not finished."""
    message = Message.objects.filter(pk=reply_id, state=Message.State.DONE).first()
    if message is None or not message.text:
        return None
    return answer_frame(message)


def reply_exists(reply_id: str) -> bool:
    """Whether the question has an answer row (not: it went to a human agent)."""
    return Message.objects.filter(pk=reply_id).exists()


def reply_failed(reply_id: str) -> bool:
    """Whether the model answer `reply_id` failed (refused, failed or timed out)."""
    return Message.objects.filter(pk=reply_id, state=Message.State.FAILED).exists()


@dataclass(frozen=True)
class UnfinishedAnswer:
    """A model answer still being generated (or lost) when its customer's socket went away."""

    message_id: str  # the customer's message
    client_message_id: str
    question: str
    received_at: datetime
    # Whether a holding reply is stored. Nothing records that the answer's text has started
    # to stream, so False does not mean a holding reply is still due
    # (consumers.delivery.resume_pending).
    holding_sent: bool


def unfinished_answers(conversation_id: str) -> list[UnfinishedAnswer]:
    """The conversation's model answers that are neither finished nor failed, oldest first."""
    replies = (
        Message.objects.filter(
            conversation_id=conversation_id,
            role=Message.Role.ASSISTANT,
            source=Message.Source.LLM,
            state__in=(Message.State.PENDING, Message.State.STREAMING),
            in_reply_to__isnull=False,
            # Delivered already (its end reached a socket just before the finalize stored it),
            # or cut short by a chosen suggestion: nothing more to wait for.
            delivered=False,
        )
        .select_related("in_reply_to")
        .order_by("received_at")
    )
    questions = [reply.in_reply_to for reply in replies]
    with_holding = set(
        Message.objects.filter(
            pk__in=[reply_id_for(str(q.pk), "holding") for q in questions]
        ).values_list("in_reply_to_id", flat=True)
    )
    return [
        UnfinishedAnswer(
            message_id=str(question.pk),
            client_message_id=question.client_message_id,
            question=question.text,
            received_at=question.received_at,
            holding_sent=question.pk in with_holding,
        )
        for question in questions
    ]


def unreported_failures(conversation_id: str) -> list[tuple[str, str]]:
    """(message id, client_message_id) of questions whose model answer failed while no socket
    of the conversation was there to say so, oldest first."""
    rows = (
        Message.objects.filter(
            conversation_id=conversation_id,
            role=Message.Role.ASSISTANT,
            source=Message.Source.LLM,
            state=Message.State.FAILED,
            delivered=False,
            in_reply_to__isnull=False,
        )
        .order_by("received_at")
        .values_list("in_reply_to_id", "in_reply_to__client_message_id")
    )
    return [(str(message_id), client_id) for message_id, client_id in rows]


def undelivered_answers(conversation_id: str) -> list[dict[str, object]]:
    """Finished answers of the conversation the customer has not received yet, oldest first."""
    rows = Message.objects.filter(
        conversation_id=conversation_id,
        role=Message.Role.ASSISTANT,
        state=Message.State.DONE,
        delivered=False,
    ).exclude(text="")
    return [answer_frame(row) for row in rows.order_by("received_at", "completed_at")]


@dataclass(frozen=True)
class FeedbackChange:
    """A customer's feedback on an answer, as stored: what it was before and the cache entry
    the answer came from ("" for answers not served from the cache)."""

    previous: int | None  # +1, -1, or None when none was given before
    entry_id: str


def record_feedback(conversation_id: str, message_id: str, positive: bool) -> FeedbackChange | None:
    """Store thumbs up/down on an answer of this conversation; None when no such answer.

    Returns the previous value so the caller tells the cache only about a change (a widget
    that sends the same click three times must not count three votes).
    """
    with transaction.atomic():
        row = (
            Message.objects.select_for_update()
            .filter(pk=message_id, conversation_id=conversation_id, role=Message.Role.ASSISTANT)
            .values("feedback", "cache_entry_id")
            .first()
        )
        if row is None:
            return None
        Message.objects.filter(pk=message_id).update(feedback=1 if positive else -1)
    return FeedbackChange(previous=row["feedback"], entry_id=row["cache_entry_id"])
