"""Small builders for dashboard test data: conversations with questions and their answers."""

from __future__ import annotations

from datetime import datetime

from chatplatform.conversations.models import Conversation, Message
from chatplatform.tenants.models import Site


def conversation(site: Site, started_at: datetime, handoff: bool = False) -> Conversation:
    conv = Conversation.objects.create(site=site, visitor_id="visitor")
    # started_at is auto_now_add: set the test's time afterwards.
    Conversation.objects.filter(pk=conv.pk).update(
        started_at=started_at,
        status=Conversation.Status.HANDOFF_REQUESTED if handoff else Conversation.Status.OPEN,
        handoff_requested_at=started_at if handoff else None,
    )
    conv.refresh_from_db()
    return conv


def question(conv: Conversation, text: str, at: datetime) -> Message:
    return Message.objects.create(
        site=conv.site, conversation=conv, role=Message.Role.CUSTOMER, text=text, received_at=at
    )


def answer(
    to: Message,
    source: str,
    *,
    ttft_ms: float | None,
    total_ms: float | None,
    sla_met: bool | None,
    text: str = "an answer",
    feedback: int | None = None,
    gpu_seconds: float = 0.0,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
) -> Message:
    role = Message.Role.AGENT if source == Message.Source.AGENT else Message.Role.ASSISTANT
    return Message.objects.create(
        site=to.site,
        conversation=to.conversation,
        role=role,
        text=text,
        source=source,
        in_reply_to=to,
        received_at=to.received_at,
        ttft_ms=ttft_ms,
        total_ms=total_ms,
        sla_met=sla_met,
        feedback=feedback,
        gpu_seconds=gpu_seconds,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )
