"""Telling people outside the inbox about a handoff event: the site's webhook (signed, retried)
and, for a new handoff or an e-mail address left, its support address. Both go through Celery
tasks on the CPU queue, so a slow receiver or mail server never holds up a chat."""

from __future__ import annotations

import json
import logging

from django.utils import timezone

from chatplatform.agents import emails
from chatplatform.agents.models import Handoff, WebhookDelivery
from chatplatform.agents.records import agent_name
from inference.contracts import Queue

logger = logging.getLogger(__name__)

DELIVER_WEBHOOK_TASK = "chatplatform.agents.deliver_webhook"
SEND_EMAIL_TASK = "chatplatform.agents.send_email"


class Event:
    """Webhook event names (the `event` field and X-Chatplatform-Event header)."""

    REQUESTED = "handoff.requested"
    CLAIMED = "handoff.claimed"
    NO_AGENT = "handoff.no_agent"
    CONTACT_LEFT = "handoff.contact_left"
    REQUEUED = "handoff.requeued"  # the agent's socket was gone past the grace period
    HANDED_BACK = "handoff.handed_back"
    RESOLVED = "handoff.resolved"
    RATED = "handoff.rated"


EMAIL_FOR_EVENT = {Event.REQUESTED: emails.REQUESTED, Event.CONTACT_LEFT: emails.CONTACT_LEFT}


def payload(handoff: Handoff, event: str) -> dict[str, object]:
    return {
        "event": event,
        "occurred_at": timezone.now().isoformat(),
        "site": {"id": handoff.site_id, "name": handoff.site.name},
        "conversation_id": str(handoff.conversation_id),
        "handoff": {
            "id": str(handoff.pk),
            "status": handoff.status,
            "requested_at": handoff.requested_at.isoformat(),
            "agent": agent_name(handoff.agent) if handoff.agent_id else None,
            "unavailable": handoff.unavailable or None,
            "contact_email": handoff.contact_email or None,
            "rating": handoff.rating,
            "rating_comment": handoff.rating_comment or None,
        },
        "inbox_url": emails.inbox_url(str(handoff.conversation_id)),
    }


def handoff_event(handoff_id: str, event: str) -> None:
    """Queue the webhook delivery and the e-mail (if the site has them) of one event."""
    handoff = (
        Handoff.objects.select_related("site", "site__agent_settings", "agent")
        .filter(pk=handoff_id)
        .first()
    )
    if handoff is None:
        return
    settings = getattr(handoff.site, "agent_settings", None)
    if settings is None:
        return
    from chatplatform.celery_app import app

    if settings.webhook_url:
        delivery = WebhookDelivery.objects.create(
            site_id=handoff.site_id,
            event=event,
            url=settings.webhook_url,
            body=json.dumps(payload(handoff, event), ensure_ascii=False),
        )
        app.send_task(DELIVER_WEBHOOK_TASK, args=[str(delivery.pk)], queue=Queue.CPU.value)
    kind = EMAIL_FOR_EVENT.get(event)
    if kind is not None and settings.support_email:
        app.send_task(SEND_EMAIL_TASK, args=[handoff_id, kind], queue=Queue.CPU.value)
