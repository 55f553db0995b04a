"""Human agents: per-site settings (opening hours, notifications), handoffs and the webhook
delivery log.

A `Handoff` is one request of a customer to talk to a person, from the request to its end
(handed back to the bot, or resolved). At most one handoff of a conversation is open (waiting
or held) at a time; claiming one is a conditional UPDATE, so two agents never hold it.
"""

from __future__ import annotations

import secrets
import uuid
import zoneinfo
from datetime import time

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from chatplatform.conversations.models import Conversation
from chatplatform.tenants.models import Site

DEFAULT_REPLY_WITHIN_MINUTES = 5
MIDNIGHT = time(0)  # as a closing time: the end of the day


def new_webhook_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def validate_timezone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
        raise ValidationError(f"{value!r} is not a time zone name like Europe/Paris") from error


class AgentSettings(models.Model):
    """How a site's human agents are reached; a site without it is served around the clock
    with the defaults (no e-mail, no webhook)."""

    site = models.OneToOneField(Site, on_delete=models.CASCADE, related_name="agent_settings")
    timezone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_timezone],
        help_text="Time zone of the opening hours, e.g. Europe/Paris.",
    )
    reply_within_minutes = models.PositiveSmallIntegerField(
        default=DEFAULT_REPLY_WITHIN_MINUTES,
        validators=[MinValueValidator(1), MaxValueValidator(24 * 60)],
        help_text="When no agent has claimed a handoff after this long, the customer is told "
        "so and offered to leave an e-mail address.",
    )
    support_email = models.EmailField(
        blank=True, help_text="Told of every handoff and every e-mail address left; empty: none."
    )
    webhook_url = models.URLField(
        blank=True, help_text="Receives handoff events as signed JSON POSTs; empty: none."
    )
    webhook_secret = models.CharField(
        max_length=80,
        default=new_webhook_secret,
        help_text="HMAC-SHA256 key of the X-Chatplatform-Signature header.",
    )

    class Meta:
        verbose_name = "human agent settings"
        verbose_name_plural = "human agent settings"

    def __str__(self) -> str:
        return f"agents of {self.site}"


class OpeningHours(models.Model):
    """One interval during which agents answer (site's time zone). A site with no intervals is
    staffed around the clock."""

    class Weekday(models.IntegerChoices):
        MONDAY = 0
        TUESDAY = 1
        WEDNESDAY = 2
        THURSDAY = 3
        FRIDAY = 4
        SATURDAY = 5
        SUNDAY = 6

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="opening_hours")
    weekday = models.PositiveSmallIntegerField(choices=Weekday.choices)
    opens = models.TimeField()
    closes = models.TimeField(help_text="Later than opens; 00:00 means midnight (end of day).")

    class Meta:
        ordering = ["weekday", "opens"]
        verbose_name = "opening hours"
        verbose_name_plural = "opening hours"

    def __str__(self) -> str:
        return f"{self.get_weekday_display()} {self.opens:%H:%M}-{self.closes:%H:%M}"

    def clean(self) -> None:
        if self.opens is None or self.closes is None:
            return  # the form reports the missing field
        if self.closes != MIDNIGHT and self.closes <= self.opens:
            raise ValidationError("closes must be later than opens (00:00 for midnight)")


class Handoff(models.Model):
    class Status(models.TextChoices):
        WAITING = "waiting", "waiting for an agent"
        HELD = "held", "held by an agent"
        HANDED_BACK = "handed_back", "handed back to the bot"
        RESOLVED = "resolved"

    OPEN_STATUSES = (Status.WAITING, Status.HELD)

    class Unavailable(models.TextChoices):
        CLOSED = "closed", "outside opening hours"
        NO_AGENT = "no_agent", "no agent answered in time"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Denormalised from the conversation: the inbox and the dashboard filter by site.
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="handoffs")
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="handoffs"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.WAITING)
    requested_at = models.DateTimeField()
    # When it (re)entered the queue: the request, or an agent's socket lost past the grace.
    waiting_since = models.DateTimeField()
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="handoffs",
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    first_agent_reply_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # Why the customer was told that nobody is available (empty: they were not).
    unavailable = models.CharField(max_length=16, choices=Unavailable.choices, blank=True)
    unavailable_at = models.DateTimeField(null=True, blank=True)
    contact_email = models.EmailField(blank=True, help_text="Left by the customer for a reply.")
    contact_left_at = models.DateTimeField(null=True, blank=True)
    rating = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(5)]
    )
    rating_comment = models.TextField(blank=True)
    rated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at"]
        indexes = [
            models.Index(fields=["site", "status"]),
            models.Index(fields=["site", "requested_at"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation"],
                condition=models.Q(status__in=["waiting", "held"]),
                name="one_open_handoff_per_conversation",
            )
        ]

    def __str__(self) -> str:
        return f"handoff {self.conversation_id} ({self.status})"


class WebhookDelivery(models.Model):
    """One event POSTed to a site's webhook, with every attempt (the admin's delivery log)."""

    class Status(models.TextChoices):
        PENDING = "pending"  # queued, or waiting for its next retry
        DELIVERED = "delivered"
        FAILED = "failed"  # every attempt failed

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="webhook_deliveries")
    event = models.CharField(max_length=40)
    url = models.URLField()
    body = models.TextField(help_text="The JSON body exactly as signed and sent.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event} -> {self.url} ({self.status})"


class WebhookAttempt(models.Model):
    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    attempted_at = models.DateTimeField(auto_now_add=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    duration_ms = models.FloatField()

    class Meta:
        ordering = ["attempted_at"]

    def __str__(self) -> str:
        return f"{self.status_code or self.error} at {self.attempted_at:%Y-%m-%d %H:%M:%S}"


class AgentReply(models.Model):
    """Who wrote an agent message (Message role `agent`), kept beside the message: the name as
    the customer saw it, even after the user is renamed or deleted."""

    message = models.OneToOneField(
        "conversations.Message", on_delete=models.CASCADE, related_name="agent_reply"
    )
    handoff = models.ForeignKey(Handoff, on_delete=models.CASCADE, related_name="replies")
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    agent_name = models.CharField(max_length=150)

    def __str__(self) -> str:
        return f"{self.agent_name}: {self.message_id}"
