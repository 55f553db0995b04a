"""FAQs curated by support admins. Each edit bumps `version`, which cache entries derived from
the FAQ carry, so a stale entry can always be recognised."""

from __future__ import annotations

from django.db import models
from django.db.models import F

from chatplatform.tenants.models import Site


class FAQ(models.Model):
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="faqs")
    question = models.CharField("canonical question", max_length=500)
    answer = models.TextField()
    is_active = models.BooleanField(default=True)
    version = models.PositiveIntegerField(default=1, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "FAQ"
        ordering = ["site", "question"]
        indexes = [models.Index(fields=["site", "is_active"])]

    def __str__(self) -> str:
        return self.question

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            # Increment in the database, not in Python, so two concurrent edits both count.
            self.version = F("version") + 1
        super().save(*args, **kwargs)
        if self.pk is not None:
            self.refresh_from_db(fields=["version"])

    def phrasings(self) -> list[str]:
        """The canonical question first, then every variant."""
        return [self.question, *(variant.text for variant in self.variants.all())]


class FAQVariant(models.Model):
    """An alternative phrasing of an FAQ's question (what customers actually type)."""

    faq = models.ForeignKey(FAQ, on_delete=models.CASCADE, related_name="variants")
    text = models.CharField(max_length=500)

    class Meta:
        verbose_name = "alternative phrasing"
        ordering = ["id"]

    def __str__(self) -> str:
        return self.text
