"""Changes to handoffs: the customer's requests, the agent's actions and the sweep's (reading
them is records.py and inbox.py). Small synchronous functions, each one job.

The consumers call them through `database_sync_to_async`, the Celery tasks directly. Every
change of a handoff is one conditional UPDATE (`status=...` in its WHERE clause), so two agents
racing for a conversation, or an agent's reply racing a resolve, have exactly one winner.
Refusals are `ProtocolError`s with the stable codes of docs/protocol.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.db import IntegrityError, transaction
from django.db.models import DateTimeField, F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from chatplatform.agents import hours
from chatplatform.agents.models import (
    DEFAULT_REPLY_WITHIN_MINUTES,
    AgentReply,
    AgentSettings,
    Handoff,
)
from chatplatform.agents.records import (
    AgentMessage,
    HandoffView,
    agent_message,
    agent_name,
    latest_handoff,
    open_handoff,
    opening_intervals,
    settings_for,
    view,
)
from chatplatform.chat.protocol import ErrorCode, ProtocolError
from chatplatform.conversations.models import Conversation, Message

Status = Handoff.Status


# --- the customer's requests --------------------------------------------------------------------


def request_handoff(
    site_id: int, conversation_id: str, now: datetime | None = None
) -> tuple[HandoffView, bool]:
    """Open a handoff (queued for the site's agents); (view, created). A second request while
    one is open changes nothing and returns it. Outside opening hours the handoff is still
    queued (an agent may be around) and marked `closed`, which the widget says honestly."""
    existing = open_handoff(conversation_id)
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
        existing = open_handoff(conversation_id)
        if existing is None:
            raise
        return view(existing), False
    return view(handoff), True


def leave_contact(conversation_id: str, email: str, now: datetime | None = None) -> HandoffView:
    """Store the customer's e-mail address on their open (else latest) handoff."""
    handoff = open_handoff(conversation_id) or latest_handoff(conversation_id)
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
    handoff = latest_handoff(conversation_id)
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


def _held(conversation_id: str, user_id: int, site_ids: list[int]) -> dict[str, object]:
    """The filter of the handoff this agent holds on a conversation of their sites."""
    return {
        "conversation_id": conversation_id,
        "site_id__in": site_ids,
        "status": Status.HELD,
        "agent_id": user_id,
    }


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
            return agent_message(existing, existing.agent_reply.agent_name), False
        handoff = (
            Handoff.objects.select_for_update()
            .select_related("agent")
            .filter(**_held(conversation_id, user_id, site_ids))
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
    return agent_message(message, name), True


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
        .filter(**_held(conversation_id, user_id, site_ids))
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
