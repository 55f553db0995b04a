"""What the agent inbox shows: open handoffs of the agent's sites, one conversation's summary,
its transcript, and the agent replies a customer's widget has not received yet."""

from __future__ import annotations

from django.db.models import OuterRef, Subquery

from chatplatform.agents import config
from chatplatform.agents.models import Handoff
from chatplatform.agents.records import agent_message, agent_name
from chatplatform.chat.protocol import ErrorCode, ProtocolError
from chatplatform.conversations.models import Conversation, Message


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
    return [agent_message(m, m.agent_reply.agent_name).frame() for m in rows]
