"""FAQs curated by support admins. Each edit bumps `version`, which cache entries derived from
the FAQ carry, so a stale entry can always be recognised."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import models, transaction
from django.db.models import F
from django.dispatch import Signal

from chatplatform.tenants.models import Site

# Sent (inside the writing transaction) after a bulk write that skipped save() and its
# post_save/post_delete signals: QuerySet.update() (so also bulk_update()) and bulk_create(),
# of FAQs or of their variants. `rows`: (faq id, site id *before* the write) of every FAQ
# touched. The semantic cache listens (chatplatform/semanticcache/signals.py); the faq app
# does not import it.
faqs_bulk_changed = Signal()


class FAQQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> int:
        """Bump the versions like save() does (cache entries carry them) and announce the rows:
        without it, `FAQ.objects.filter(...).update(is_active=False)` left the FAQs served."""
        kwargs.setdefault("version", F("version") + 1)
        with transaction.atomic(using=self.db, savepoint=False):
            rows = list(self.values_list("pk", "site_id"))
            count = super().update(**kwargs)
            if rows:
                faqs_bulk_changed.send(sender=FAQ, rows=rows)
        return count

    def bulk_create(self, objs: Iterable[FAQ], *args: Any, **kwargs: Any) -> list[FAQ]:
        created = super().bulk_create(objs, *args, **kwargs)
        rows = [(faq.pk, faq.site_id) for faq in created if faq.pk is not None]
        if rows:
            faqs_bulk_changed.send(sender=FAQ, rows=rows)
        return created


class FAQ(models.Model):
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="faqs")
    question = models.CharField("canonical question", max_length=500)
    answer = models.TextField()
    is_active = models.BooleanField(default=True)
    version = models.PositiveIntegerField(default=1, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = FAQQuerySet.as_manager()

    class Meta:
        verbose_name = "FAQ"
        ordering = ["site", "question"]
        indexes = [models.Index(fields=["site", "is_active"])]

    def __str__(self) -> str:
        return self.question

    def save(self, *args, **kwargs) -> None:
        # An edit of a stored row. Not a new row with its id given (a CSV import of an export
        # from another database): an INSERT cannot hold F(), the row failed to import.
        editing = self.pk is not None and (
            not self._state.adding or FAQ.objects.filter(pk=self.pk).exists()
        )
        if editing:
            # Increment in the database, not in Python, so two concurrent edits both count.
            self.version = F("version") + 1
        super().save(*args, **kwargs)
        if editing:
            self.refresh_from_db(fields=["version"])

    def phrasings(self) -> list[str]:
        """The canonical question first, then every variant."""
        return [self.question, *(variant.text for variant in self.variants.all())]


class FAQVariantQuerySet(models.QuerySet):
    """Variant bulk writes announce their FAQs too (a phrasing added or changed must be served)."""

    def update(self, **kwargs: Any) -> int:
        with transaction.atomic(using=self.db, savepoint=False):
            before = list(self.values_list("pk", "faq_id"))
            count = super().update(**kwargs)
            faq_ids = {faq_id for _, faq_id in before}
            if "faq" in kwargs or "faq_id" in kwargs:
                # Variants moved to another FAQ: that one changes too.
                pks = [pk for pk, _ in before]
                for start in range(0, len(pks), IN_CHUNK):
                    chunk = pks[start : start + IN_CHUNK]
                    faq_ids.update(
                        FAQVariant.objects.filter(pk__in=chunk).values_list("faq_id", flat=True)
                    )
            _announce_faqs(faq_ids)
        return count

    def bulk_create(
        self, objs: Iterable[FAQVariant], *args: Any, **kwargs: Any
    ) -> list[FAQVariant]:
        created = super().bulk_create(objs, *args, **kwargs)
        _announce_faqs({variant.faq_id for variant in created})
        return created


# Ids per `pk__in` query (SQLite allows a limited number of parameters per statement).
IN_CHUNK = 500


def _announce_faqs(faq_ids: set[int]) -> None:
    ids = sorted(faq_ids)
    rows: list[tuple[int, int]] = []
    for start in range(0, len(ids), IN_CHUNK):
        chunk = ids[start : start + IN_CHUNK]
        rows.extend(FAQ.objects.filter(pk__in=chunk).values_list("pk", "site_id"))
    if rows:
        faqs_bulk_changed.send(sender=FAQ, rows=rows)


class FAQVariant(models.Model):
    """An alternative phrasing of an FAQ's question (what customers actually type)."""

    faq = models.ForeignKey(FAQ, on_delete=models.CASCADE, related_name="variants")
    text = models.CharField(max_length=500)

    objects = FAQVariantQuerySet.as_manager()

    class Meta:
        verbose_name = "alternative phrasing"
        ordering = ["id"]

    def __str__(self) -> str:
        return self.text
