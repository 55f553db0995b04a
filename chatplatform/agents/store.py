"""Database helpers of the human-agent side: small synchronous functions, each one job.

The consumers call them through `database_sync_to_async`, the Celery tasks directly. Every
change of a handoff is one conditional UPDATE (`status=...` in its WHERE clause), so two agents
racing for a conversation, or an agent's reply racing a resolve, have exactly one winner.
Refusals are `ProtocolError`s with the stable codes of docs/protocol.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import DateTimeField, F, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from chatplatform.agents import config, hours
from chatplatform.agents.models import (
    DEFAULT_REPLY_WITHIN_MINUTES,
    AgentReply,
    AgentSettings,
    Handoff,
    OpeningHours,
)
from chatplatform.chat.protocol import ErrorCode, ProtocolError
from chatplatform.conversations.models import Conversation, Message

Status = Handoff.Status
# How long after a resolve a returning customer is still asked for a rating.
RATING_OFFER_S = 24 * 3600


def agent_name(user: Any) -> str:
    """The name a customer sees for an agent: first name, else the user name."""
    if user is None:
        return "Our team"
    return user.first_name or user.get_username()


def settings_for(site_id: int) -> AgentSettings:
    """The site's agent settings (defaults, unsaved, when it has none)."""
    return AgentSettings.objects.filter(site_id=site_id).first() or AgentSettings(site_id=site_id)


def opening_intervals(site_id: int) -> list[hours.Interval]:
    return [
        hours.Interval(h.weekday, h.opens, h.closes)
        for h in OpeningHours.objects.filter(site_id=site_id)
    ]


# --- what the customer's widget is told ---------------------------------------------------------


@dataclass(frozen=True)
class HandoffView:
    """A handoff as both sides see it."""

    handoff_id: str
    conversation_id: str
    site_id: int
    status: str
    agent_id: int | None
    agent_name: str
    unavailable: str  # "" | "closed" | "no_agent"
    unavailable_message: str
    opens_at: str | None  # ISO time agents are back, when closed
    contact_email: str
    reply_within_minutes: int
    rating: int | None

    def for_customer(self) -> dict[str, object]:
        """The `handoff` object of the welcome frame (the widget restores its state from it)."""
        return {
            "status": self.status,
            "agent_name": self.agent_name if self.status == Status.HELD else "",
            "unavailable": self.unavailable or None,
            "message": self.unavailable_message,
            "opens_at": self.opens_at,
            "contact_left": bool(self.contact_email),
            "reply_within_minutes": self.reply_within_minutes,
            "rated": self.rating is not None,
        }


def view(handoff: Handoff) -> HandoffView:
    site_settings = settings_for(handoff.site_id)
    message, opens_at = "", None
    if handoff.unavailable == Handoff.Unavailable.CLOSED:
        zone = ZoneInfo(site_settings.timezone)
        opening = hours.next_opening(
            opening_intervals(handoff.site_id), zone, handoff.unavailable_at or timezone.now()
        )
        opens_at = opening.isoformat() if opening else None
        message = f"{hours.closed_text(opening)} {LEAVE_EMAIL_TEXT}"
    elif handoff.unavailable == Handoff.Unavailable.NO_AGENT:
        message = (
            f"Sorry, nobody from our team could answer within "
            f"{site_settings.reply_within_minutes} minutes. {LEAVE_EMAIL_TEXT}"
        )
    return HandoffView(
        handoff_id=str(handoff.pk),
        conversation_id=str(handoff.conversation_id),
        site_id=handoff.site_id,
        status=handoff.status,
        agent_id=handoff.agent_id,
        agent_name=agent_name(handoff.agent) if handoff.agent_id else "",
        unavailable=handoff.unavailable,
        unavailable_message=message,
        opens_at=opens_at,
        contact_email=handoff.contact_email,
        reply_within_minutes=site_settings.reply_within_minutes,
        rating=handoff.rating,
    )


LEAVE_EMAIL_TEXT = "Leave your e-mail address and we will reply by e-mail."


def _open_handoff(conversation_id: str) -> Handoff | None:
    return (
        Handoff.objects.select_related("agent")
        .filter(conversation_id=conversation_id, status__in=Handoff.OPEN_STATUSES)
        .first()
    )


def open_handoff_exists(conversation_id: str) -> bool:
    return Handoff.objects.filter(
        conversation_id=conversation_id, status__in=Handoff.OPEN_STATUSES
    ).exists()


def _latest_handoff(conversation_id: str) -> Handoff | None:
    return (
        Handoff.objects.select_related("agent")
        .filter(conversation_id=conversation_id)
        .order_by("-requested_at")
        .first()
    )


def customer_state(conversation_id: str, now: datetime | None = None) -> HandoffView | None:
    """For a (re)connecting widget: the open handoff, or a recent resolve still to be rated."""
    handoff = _open_handoff(conversation_id) or _latest_handoff(conversation_id)
    if handoff is None:
        return None
    if handoff.status in Handoff.OPEN_STATUSES:
        return view(handoff)
    now = now or timezone.now()
    recent = handoff.ended_at and now - handoff.ended_at < timedelta(seconds=RATING_OFFER_S)
    if handoff.status == Status.RESOLVED and handoff.rating is None and recent:
        return view(handoff)
    return None


# --- the customer's requests --------------------------------------------------------------------


def request_handoff(
    site_id: int, conversation_id: str, now: datetime | None = None
) -> tuple[HandoffView, bool]:
    """Open a handoff (queued for the site's agents); (view, created). A second request while
    one is open changes nothing and returns it. Outside opening hours the handoff is still
    queued (an agent may be around) and marked `closed`, which the widget says honestly."""
    existing = _open_handoff(conversation_id)
    if existing is not None:
        return view(existing), False
    now = now or timezone.now()
    zone = ZoneInfo(settings_for(site_id).timezone)
    open_now = hours.is_open(opening_intervals(site_id), zone, now)
    try:
        with transaction.atomic():
            handoff = Handoff.objects.create(
                site_id=site_id,
                conversation_id=conversation_id,
                requested_at=now,
                waiting_since=now,
                unavailable="" if open_now else Handoff.Unavailable.CLOSED,
                unavailable_at=None if open_now else now,
            )
            Conversation.objects.filter(pk=conversation_id).update(
                status=Conversation.Status.HANDOFF_REQUESTED,
                handoff_requested_at=now,
                last_activity_at=now,
            )
    except IntegrityError:
        # Another tab of this conversation asked at the same instant: one handoff, theirs.
        existing = _open_handoff(conversation_id)
        if existing is None:
            raise
        return view(existing), False
    return view(handoff), True


def leave_contact(conversation_id: str, email: str, now: datetime | None = None) -> HandoffView:
    """Store the customer's e-mail address on their open (else latest) handoff."""
    handoff = _open_handoff(conversation_id) or _latest_handoff(conversation_id)
    if handoff is None:
        raise ProtocolError(
            ErrorCode.NO_HANDOFF, "Ask for a person first; then you can leave an e-mail address."
        )
    now = now or timezone.now()
    Handoff.objects.filter(pk=handoff.pk).update(contact_email=email, contact_left_at=now)
    handoff.contact_email, handoff.contact_left_at = email, now
    return view(handoff)


def rate(
    conversation_id: str, score: int, comment: str, now: datetime | None = None
) -> HandoffView:
    """Store the customer's rating of their latest handoff, which must be resolved (a second
    rating replaces the first)."""
    handoff = _latest_handoff(conversation_id)
    if handoff is None or handoff.status != Status.RESOLVED:
        raise ProtocolError(
            ErrorCode.NOT_RESOLVED, "Only a conversation an agent resolved can be rated."
        )
    now = now or timezone.now()
    Handoff.objects.filter(pk=handoff.pk).update(rating=score, rating_comment=comment, rated_at=now)
    handoff.rating, handoff.rating_comment, handoff.rated_at = score, comment, now
    return view(handoff)


# --- the agent's actions ------------------------------------------------------------------------


def _refuse(conversation_id: str, site_ids: list[int], code: ErrorCode, message: str) -> None:
    """Raise `code`, or `not_found` when the conversation is not in the agent's sites (another
    site's conversation is not revealed to exist)."""
    if not Conversation.objects.filter(pk=conversation_id, site_id__in=site_ids).exists():
        raise ProtocolError(ErrorCode.NOT_FOUND, "No conversation with this id in your sites.")
    raise ProtocolError(code, message)


NOT_HOLDER_TEXT = (
    "You do not hold this conversation: claim it first (it may have been resolved, handed "
    "back, or returned to the queue while you were away)."
)


def claim(
    conversation_id: str, user_id: int, site_ids: list[int], now: datetime | None = None
) -> tuple[HandoffView, bool]:
    """Take a waiting conversation; (view, claimed now). Claiming one you hold already is a
    no-op; one another agent holds is refused (`already_claimed`)."""
    now = now or timezone.now()
    claimed = Handoff.objects.filter(
        conversation_id=conversation_id, site_id__in=site_ids, status=Status.WAITING
    ).update(
        status=Status.HELD,
        agent_id=user_id,
        claimed_at=Coalesce(F("claimed_at"), Value(now, output_field=DateTimeField())),
    )
    handoff = (
        Handoff.objects.select_related("agent")
        .filter(conversation_id=conversation_id, site_id__in=site_ids)
        .filter(status__in=Handoff.OPEN_STATUSES)
        .first()
    )
    if handoff is None:
        _refuse(conversation_id, site_ids, ErrorCode.NOT_WAITING, "Nobody asked for a person here.")
        raise AssertionError("unreachable")
    if handoff.agent_id != user_id:
        raise ProtocolError(
            ErrorCode.ALREADY_CLAIMED, f"{agent_name(handoff.agent)} already holds this chat."
        )
    return view(handoff), bool(claimed)


@dataclass(frozen=True)
class AgentMessage:
    message_id: str
    conversation_id: str
    site_id: int
    text: str
    agent_name: str
    sent_at: datetime

    def frame(self) -> dict[str, object]:
        """The customer's `agent.message` frame."""
        return {
            "type": "agent.message",
            "message_id": self.message_id,
            "text": self.text,
            "agent_name": self.agent_name,
            "sent_at": self.sent_at.isoformat(),
        }


def reply(
    conversation_id: str,
    user_id: int,
    site_ids: list[int],
    client_message_id: str,
    text: str,
    now: datetime | None = None,
) -> tuple[AgentMessage, bool]:
    """Store an agent's reply; (message, created). A resend of a stored reply (same
    client_message_id: the inbox lost its socket before the ack) returns it with created=False,
    even if the conversation was resolved since; a new reply needs the conversation held."""
    now = now or timezone.now()
    with transaction.atomic():
        existing = (
            Message.objects.select_related("agent_reply")
            .filter(
                conversation_id=conversation_id,
                site_id__in=site_ids,
                role=Message.Role.AGENT,
                client_message_id=client_message_id,
            )
            .first()
        )
        if existing is not None:
            return _agent_message(existing, existing.agent_reply.agent_name), False
        handoff = (
            Handoff.objects.select_for_update()
            .select_related("agent")
            .filter(
                conversation_id=conversation_id,
                site_id__in=site_ids,
                status=Status.HELD,
                agent_id=user_id,
            )
            .first()
        )
        if handoff is None:
            _refuse(conversation_id, site_ids, ErrorCode.NOT_HOLDER, NOT_HOLDER_TEXT)
            raise AssertionError("unreachable")
        message = Message.objects.create(
            site_id=handoff.site_id,
            conversation_id=conversation_id,
            role=Message.Role.AGENT,
            source=Message.Source.AGENT,
            state=Message.State.DONE,
            text=text,
            client_message_id=client_message_id,
            received_at=now,
            first_token_at=now,
            completed_at=now,
        )
        name = agent_name(handoff.agent)
        AgentReply.objects.create(
            message=message, handoff=handoff, agent_id=user_id, agent_name=name
        )
        Handoff.objects.filter(pk=handoff.pk, first_agent_reply_at__isnull=True).update(
            first_agent_reply_at=now
        )
        Conversation.objects.filter(pk=conversation_id).update(last_activity_at=now)
    return _agent_message(message, name), True


def _agent_message(message: Message, name: str) -> AgentMessage:
    return AgentMessage(
        message_id=str(message.pk),
        conversation_id=str(message.conversation_id),
        site_id=message.site_id,
        text=message.text,
        agent_name=name,
        sent_at=message.received_at,
    )


def _end(
    conversation_id: str,
    user_id: int,
    site_ids: list[int],
    status: Status,
    conversation_status: Conversation.Status,
    now: datetime | None,
) -> HandoffView:
    now = now or timezone.now()
    handoff = (
        Handoff.objects.select_related("agent")
        .filter(
            conversation_id=conversation_id,
            site_id__in=site_ids,
            status=Status.HELD,
            agent_id=user_id,
        )
        .first()
    )
    ended = handoff is not None and Handoff.objects.filter(
        pk=handoff.pk, status=Status.HELD, agent_id=user_id
    ).update(status=status, ended_at=now)
    if not ended:
        _refuse(conversation_id, site_ids, ErrorCode.NOT_HOLDER, NOT_HOLDER_TEXT)
    assert handoff is not None
    Conversation.objects.filter(pk=conversation_id).update(status=conversation_status)
    handoff.status, handoff.ended_at = status, now
    return view(handoff)


def hand_back(
    conversation_id: str, user_id: int, site_ids: list[int], now: datetime | None = None
) -> HandoffView:
    """The bot (and cache) answer the conversation again."""
    return _end(
        conversation_id, user_id, site_ids, Status.HANDED_BACK, Conversation.Status.OPEN, now
    )


def resolve(
    conversation_id: str, user_id: int, site_ids: list[int], now: datetime | None = None
) -> HandoffView:
    """Done: the customer is asked for a rating; a later question goes to the bot."""
    return _end(
        conversation_id, user_id, site_ids, Status.RESOLVED, Conversation.Status.CLOSED, now
    )


# --- the sweep: what happens when nobody acts ---------------------------------------------------


def requeue_held_by(user_id: int, now: datetime | None = None) -> list[tuple[HandoffView, str]]:
    """An agent gone past the grace period: their conversations go back to the queue.
    Returns (handoff, name of the agent who was holding it) per conversation."""
    now = now or timezone.now()
    views = []
    for handoff in Handoff.objects.select_related("agent").filter(
        status=Status.HELD, agent_id=user_id
    ):
        requeued = Handoff.objects.filter(pk=handoff.pk, status=Status.HELD, agent_id=user_id)
        back_in_queue = requeued.update(
            status=Status.WAITING,
            agent=None,
            waiting_since=now,
            unavailable="",
            unavailable_at=None,
        )
        if back_in_queue:
            handoff.status, handoff.waiting_since, handoff.unavailable = Status.WAITING, now, ""
            gone_name = agent_name(handoff.agent)
            handoff.agent = None
            handoff.agent_id = None
            views.append((view(handoff), gone_name))
    return views


def agents_holding() -> list[int]:
    """Users holding at least one conversation."""
    return list(
        Handoff.objects.filter(status=Status.HELD, agent__isnull=False)
        .values_list("agent_id", flat=True)
        .distinct()
    )


def expire_unanswered(now: datetime | None = None) -> list[HandoffView]:
    """Waiting handoffs past their site's reply_within_minutes: marked `no_agent` (the widget
    then says so and offers to take an e-mail address). Each is marked once."""
    now = now or timezone.now()
    waiting = list(Handoff.objects.filter(status=Status.WAITING, unavailable=""))
    minutes = dict(
        AgentSettings.objects.filter(site_id__in={h.site_id for h in waiting}).values_list(
            "site_id", "reply_within_minutes"
        )
    )
    expired = []
    for handoff in waiting:
        limit = timedelta(minutes=minutes.get(handoff.site_id, DEFAULT_REPLY_WITHIN_MINUTES))
        if handoff.waiting_since + limit > now:
            continue
        marked = Handoff.objects.filter(pk=handoff.pk, status=Status.WAITING, unavailable="")
        if marked.update(unavailable=Handoff.Unavailable.NO_AGENT, unavailable_at=now):
            handoff.unavailable, handoff.unavailable_at = Handoff.Unavailable.NO_AGENT, now
            expired.append(view(handoff))
    return expired


# --- what the inbox shows -----------------------------------------------------------------------


def _summary(handoff: Handoff, preview: str | None) -> dict[str, object]:
    conversation = handoff.conversation
    return {
        "conversation_id": str(handoff.conversation_id),
        "handoff_id": str(handoff.pk),
        "site_id": handoff.site_id,
        "site_name": handoff.site.name,
        "status": handoff.status,
        "agent_id": handoff.agent_id,
        "agent_name": agent_name(handoff.agent) if handoff.agent_id else "",
        "requested_at": handoff.requested_at.isoformat(),
        "waiting_since": handoff.waiting_since.isoformat(),
        "last_activity_at": conversation.last_activity_at.isoformat(),
        "unavailable": handoff.unavailable or None,
        "contact_email": handoff.contact_email,
        "rating": handoff.rating,
        "preview": (preview or "")[: config.PREVIEW_CHARS],
    }


def _with_preview(handoffs):  # noqa: ANN001, ANN202 - a Handoff queryset in, the same out
    last_question = (
        Message.objects.filter(conversation_id=OuterRef("conversation_id"), role="customer")
        .order_by("-received_at")
        .values("text")[:1]
    )
    return handoffs.select_related("site", "conversation", "agent").annotate(
        preview=Subquery(last_question)
    )


def inbox(site_ids: list[int]) -> list[dict[str, object]]:
    """Open handoffs of these sites, newest activity first."""
    handoffs = _with_preview(
        Handoff.objects.filter(site_id__in=site_ids, status__in=Handoff.OPEN_STATUSES)
    ).order_by("-conversation__last_activity_at")[:500]
    return [_summary(h, h.preview) for h in handoffs]


def conversation_summary(conversation_id: str, site_ids: list[int]) -> dict[str, object] | None:
    """The conversation's latest handoff as the inbox lists it (None: not in these sites)."""
    handoff = (
        _with_preview(Handoff.objects.filter(conversation_id=conversation_id, site_id__in=site_ids))
        .order_by("-requested_at")
        .first()
    )
    return None if handoff is None else _summary(handoff, handoff.preview)


def transcript(conversation_id: str, site_ids: list[int]) -> list[dict[str, object]]:
    """The conversation's messages, oldest first (the last TRANSCRIPT_LIMIT): customer, bot
    (with its source) and agents. An answer shares its question's `received_at`; ordering by
    role puts the question first."""
    if not Conversation.objects.filter(pk=conversation_id, site_id__in=site_ids).exists():
        raise ProtocolError(ErrorCode.NOT_FOUND, "No conversation with this id in your sites.")
    rows = (
        Message.objects.filter(conversation_id=conversation_id)
        .exclude(text="")
        .select_related("agent_reply")
        .order_by("-received_at", "role")[: config.TRANSCRIPT_LIMIT]
    )
    return [_transcript_entry(m) for m in reversed(rows)]


def _transcript_entry(message: Message) -> dict[str, object]:
    reply = getattr(message, "agent_reply", None) if message.role == Message.Role.AGENT else None
    return {
        "id": str(message.pk),
        "role": message.role,
        "source": message.source,
        "text": message.text,
        "state": message.state,
        "at": message.received_at.isoformat(),
        "reply_to": str(message.in_reply_to_id) if message.in_reply_to_id else None,
        "agent_name": reply.agent_name if reply is not None else "",
    }


def undelivered_agent_messages(conversation_id: str) -> list[dict[str, object]]:
    """Agent replies the customer's widget has not received (sent while it was away)."""
    rows = (
        Message.objects.filter(
            conversation_id=conversation_id, role=Message.Role.AGENT, delivered=False
        )
        .select_related("agent_reply")
        .order_by("received_at")
    )
    return [_agent_message(m, m.agent_reply.agent_name).frame() for m in rows]


def staff_user(user_id: int) -> Any:
    return get_user_model().objects.filter(pk=user_id, is_active=True).first()
