"""Notification e-mails to a site's support address, through Django's e-mail backend."""

from __future__ import annotations

from django.core.mail import EmailMessage

from chatplatform.agents import config
from chatplatform.agents.models import Handoff
from chatplatform.conversations.models import Message

REQUESTED = "requested"  # a customer asked for a person
CONTACT_LEFT = "contact_left"  # a customer left an e-mail address for a reply
KINDS = (REQUESTED, CONTACT_LEFT)
# The customer's last messages quoted in the e-mail, so the reader knows what it is about.
QUOTED_MESSAGES = 5


def inbox_url(conversation_id: str) -> str:
    return f"{config.PLATFORM_URL}/agents/?conversation={conversation_id}"


def send_handoff_email(handoff_id: str, kind: str) -> bool:
    """Send the e-mail of `kind` about a handoff; False when the site has no support address.
    A customer's address goes in Reply-To, so answering the e-mail answers the customer."""
    handoff = Handoff.objects.select_related("site").get(pk=handoff_id)
    settings = getattr(handoff.site, "agent_settings", None)
    if settings is None or not settings.support_email:
        return False
    site = handoff.site.name
    questions = list(
        Message.objects.filter(conversation_id=handoff.conversation_id, role="customer")
        .order_by("-received_at")
        .values_list("text", flat=True)[:QUOTED_MESSAGES]
    )
    quoted = "\n".join(f"> {text}" for text in reversed(questions)) or "> (no message yet)"
    if kind == CONTACT_LEFT:
        subject = f"[{site}] A customer left an e-mail address for a reply"
        intro = (
            f"The customer left {handoff.contact_email} for a reply (replying to this e-mail "
            "writes to them)."
        )
        reply_to = [handoff.contact_email]
    else:
        subject = f"[{site}] A customer asks for a person"
        intro = "A customer asked to talk to a person. Claim the conversation in the inbox."
        reply_to = []
    body = (
        f"{intro}\n\nTheir last messages:\n{quoted}\n\n"
        f"Open it in the inbox: {inbox_url(str(handoff.conversation_id))}\n"
    )
    EmailMessage(subject, body, to=[settings.support_email], reply_to=reply_to).send()
    return True
