"""Did-you-mean: the FAQ suggestions shown after a cache miss, what the customer did with
them, and the phrasings customers confirmed by choosing an FAQ."""

from __future__ import annotations

from django.db import models

from chatplatform.conversations.models import Conversation, Message
from chatplatform.faq.models import FAQ, FAQVariant
from chatplatform.tenants.models import Site


class SuggestionOffer(models.Model):
    """The suggestions shown for one customer question, and what came of them."""

    class Outcome(models.TextChoices):
        SHOWN = "shown"  # nothing chosen (yet)
        CHOSEN = "chosen"  # the customer chose one: its FAQ answered
        DECLINED = "declined", "none of these"
        # suggest_first: the customer typed a new message instead; that one went to the model
        PASSED_OVER = "passed_over", "passed over by a new message"

    question = models.OneToOneField(
        Message, primary_key=True, on_delete=models.CASCADE, related_name="suggestion_offer"
    )
    # Denormalised from the question so dashboard queries filter one indexed table.
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="suggestion_offers")
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="suggestion_offers"
    )
    received_at = models.DateTimeField(help_text="when the question arrived")
    policy = models.CharField(max_length=32)
    # As shown, best first: [{"faq_id": 1, "question": "..."}].
    faqs = models.JSONField()
    waiting = models.BooleanField(
        default=False, help_text="suggest_first: the model is not asked until the customer says"
    )
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.SHOWN)
    chosen_faq = models.ForeignKey(FAQ, null=True, blank=True, on_delete=models.SET_NULL)
    decided_at = models.DateTimeField(null=True, blank=True)
    model_cancelled = models.BooleanField(
        default=False, help_text="the choice stopped the model's generation for this question"
    )
    gpu_seconds_saved = models.FloatField(default=0.0)

    class Meta:
        indexes = [
            models.Index(fields=["site", "received_at"]),
            models.Index(fields=["conversation", "waiting"]),
        ]

    def __str__(self) -> str:
        return f"{self.outcome}: {self.question_id}"

    def shown_faq_ids(self) -> list[int]:
        return [int(item["faq_id"]) for item in self.faqs]


class ConfirmedPhrasing(models.Model):
    """A customer question that customers confirmed as a phrasing of an FAQ by choosing it."""

    class State(models.TextChoices):
        OPEN = "open"  # counting, or confirmed and waiting for an admin
        ADDED = "added"  # an admin added it as a phrasing
        AUTO_ADDED = "auto_added", "added automatically"
        DISMISSED = "dismissed"  # an admin said no (or undid an automatic addition)

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="confirmed_phrasings")
    faq = models.ForeignKey(FAQ, on_delete=models.CASCADE, related_name="confirmed_phrasings")
    # sha256 of the normalized question (cache.normalize): rewordings in case and punctuation
    # meet here.
    question_key = models.CharField(max_length=64)
    text = models.CharField(max_length=500, help_text="the first confirmed wording")
    confirmers = models.PositiveIntegerField(default=0, help_text="distinct customers")
    state = models.CharField(max_length=16, choices=State.choices, default=State.OPEN)
    variant = models.ForeignKey(FAQVariant, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    last_confirmed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["faq", "question_key"], name="one_phrasing_per_faq")
        ]
        indexes = [models.Index(fields=["site", "state", "confirmers"])]

    def __str__(self) -> str:
        return f"{self.text} -> FAQ {self.faq_id} ({self.confirmers})"


class Confirmation(models.Model):
    """One customer's choice, counted once per phrasing and identity."""

    phrasing = models.ForeignKey(
        ConfirmedPhrasing, on_delete=models.CASCADE, related_name="confirmations"
    )
    site = models.ForeignKey(Site, on_delete=models.CASCADE)
    # Evidence the server can trust (chat/visitors.py admission_evidence): a visitor the site
    # vouched for, else the network address; never a client-chosen id alone.
    confirmer = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["phrasing", "confirmer"], name="one_confirmation_per_confirmer"
            )
        ]
        indexes = [models.Index(fields=["site", "confirmer", "created_at"])]

    def __str__(self) -> str:
        return f"{self.confirmer} confirmed {self.phrasing_id}"
