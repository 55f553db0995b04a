"""Sites: one business's widget (a tenant). Everything else hangs off a Site."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

DEFAULT_SLA_MS = 300  # first token must reach the customer within this, per the design card
DEFAULT_SYSTEM_PROMPT = (
    "You are the customer-service assistant of {site_name}. Answer briefly and politely, using "
    "only the FAQ entries given. If you do not know, say so and offer a human agent."
)


def new_widget_key() -> str:
    """A public, unguessable key that identifies a site's widget (~190 bits of randomness)."""
    return "pk_" + secrets.token_urlsafe(24)


def validate_origins(value: list[str]) -> None:
    if not isinstance(value, list):
        raise ValidationError("allowed origins must be a list of origins like https://shop.example")
    for origin in value:
        parts = urlsplit(str(origin))
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ValidationError(f"{origin!r} is not an origin (scheme://host[:port])")


class SuggestionPolicy(models.TextChoices):
    """What the chat does with "did you mean" suggestions after a cache miss."""

    MODEL_WITH_SUGGESTIONS = (
        "model_with_suggestions",
        "model answers, suggestions shown beside it",
    )
    SUGGEST_FIRST = (
        "suggest_first",
        "suggestions first; the model answers on 'none of these' or a new message",
    )
    MODEL_ONLY = "model_only", "model only, no suggestions"


# Distinct customers who must choose the same FAQ for the same question before the question is
# listed as "confirmed by customers" (and, where the site opted in, added as a phrasing). One
# customer, or two colluding ones, cannot teach the cache a phrasing; three is where the
# admission of generated answers draws the same line (cache.config.ADMISSION_MIN_VISITORS).
DEFAULT_CONFIRMATIONS_NEEDED = 3
MIN_CONFIRMATIONS_NEEDED = 2


class Site(models.Model):
    name = models.CharField(max_length=200)
    widget_key = models.CharField(
        max_length=64, unique=True, default=new_widget_key, editable=False
    )
    allowed_origins = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_origins],
        help_text='Origins allowed to open the widget, e.g. ["https://shop.example"].',
    )
    greeting = models.CharField(max_length=500, default="Hi! How can we help you today?")
    system_prompt = models.TextField(
        default=DEFAULT_SYSTEM_PROMPT,
        help_text="Instructions for the model; {site_name} is replaced by the site's name.",
    )
    sla_ms = models.PositiveIntegerField(
        default=DEFAULT_SLA_MS,
        help_text="First token must reach the customer within this.",
    )
    cache_enabled = models.BooleanField(default=True)
    cache_min_confidence = models.FloatField(
        null=True,
        blank=True,
        # A confidence is a probability: below 0 the cache would serve any nearest answer.
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text=(
            "Override of the cache's shipped confidence threshold, from 0 to 1; "
            "empty = shipped default."
        ),
    )
    suggestion_policy = models.CharField(
        max_length=32,
        choices=SuggestionPolicy.choices,
        default=SuggestionPolicy.MODEL_WITH_SUGGESTIONS,
        help_text="After a cache miss: show related FAQ answers (one click answers), and when.",
    )
    confirmations_needed = models.PositiveSmallIntegerField(
        default=DEFAULT_CONFIRMATIONS_NEEDED,
        validators=[MinValueValidator(MIN_CONFIRMATIONS_NEEDED), MaxValueValidator(1000)],
        help_text=(
            "Distinct customers (vouched visitors, else addresses) who must choose the same FAQ "
            "for a question before "
            "it is listed as confirmed by customers."
        ),
    )
    auto_add_confirmed_phrasings = models.BooleanField(
        default=False,
        help_text=(
            "Add questions confirmed by customers as phrasings of the FAQ they chose, without "
            "review (listed on the near-miss page, where each can be undone). Questions "
            "carrying personal data are never added."
        ),
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def normalized_origins(self) -> set[str]:
        return {str(origin).rstrip("/").lower() for origin in self.allowed_origins}

    def allows_origin(self, origin: str | None) -> bool:
        """True when `origin` (the browser's Origin header) may open this site's widget."""
        if not origin:
            return False
        return origin.rstrip("/").lower() in self.normalized_origins()

    def instructions(self) -> str:
        return self.system_prompt.replace("{site_name}", self.name)
