"""What a handoff and an agent's message look like to the two sockets, and reading them:
the site's agent settings, a conversation's open (or latest) handoff, what a returning
customer's widget is told."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.utils import timezone

from chatplatform.agents import hours
from chatplatform.agents.models import AgentSettings, Handoff, OpeningHours
from chatplatform.conversations.models import Message

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


def open_handoff(conversation_id: str) -> Handoff | None:
    return (
        Handoff.objects.select_related("agent")
        .filter(conversation_id=conversation_id, status__in=Handoff.OPEN_STATUSES)
        .first()
    )


def open_handoff_exists(conversation_id: str) -> bool:
    return Handoff.objects.filter(
        conversation_id=conversation_id, status__in=Handoff.OPEN_STATUSES
    ).exists()


def latest_handoff(conversation_id: str) -> Handoff | None:
    return (
        Handoff.objects.select_related("agent")
        .filter(conversation_id=conversation_id)
        .order_by("-requested_at")
        .first()
    )


def customer_state(conversation_id: str, now: datetime | None = None) -> HandoffView | None:
    """For a (re)connecting widget: the open handoff, or a recent resolve still to be rated."""
    handoff = open_handoff(conversation_id) or latest_handoff(conversation_id)
    if handoff is None:
        return None
    if handoff.status in Handoff.OPEN_STATUSES:
        return view(handoff)
    now = now or timezone.now()
    recent = handoff.ended_at and now - handoff.ended_at < timedelta(seconds=RATING_OFFER_S)
    if handoff.status == Status.RESOLVED and handoff.rating is None and recent:
        return view(handoff)
    return None


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


def agent_message(message: Message, name: str) -> AgentMessage:
    return AgentMessage(
        message_id=str(message.pk),
        conversation_id=str(message.conversation_id),
        site_id=message.site_id,
        text=message.text,
        agent_name=name,
        sent_at=message.received_at,
    )
