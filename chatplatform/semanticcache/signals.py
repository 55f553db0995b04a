"""Keep the cache in line with FAQ and Site edits.

Every sync runs in `transaction.on_commit`: Django admin saves inline variants *after* the
FAQ's post_save, and a rolled-back edit must not reach the cache. `robust=True`: a Redis
outage is logged (and `manage.py rebuild_semantic_cache` repairs it) instead of failing an
admin's save that the database already committed.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from chatplatform.faq.models import FAQ, FAQVariant
from chatplatform.semanticcache.service import get_cache, set_site_policy, sync_faq_by_id
from chatplatform.tenants.models import Site


def _after_commit(faq_id: int, site_id: int) -> None:
    # One sync per saved row (an FAQ and each of its variants), not one per transaction: the
    # sync reads the FAQ as committed and is idempotent, so the repeats cost a few Redis
    # writes, while remembering "already scheduled" outside the transaction went stale when
    # it rolled back (the callbacks are dropped, the memory was not, and later saves of that
    # FAQ on the same connection were never synced).
    transaction.on_commit(lambda: sync_faq_by_id(faq_id, site_id), robust=True)


@receiver(pre_save, sender=FAQ, dispatch_uid="semanticcache_faq_moving")
def faq_moving(sender: type[FAQ], instance: FAQ, raw: bool = False, **kwargs: Any) -> None:
    """An FAQ moved to another site must leave the old site's cache too (post_save only
    knows the new site)."""
    if instance.pk is None or raw:
        return
    old_site_id = FAQ.objects.filter(pk=instance.pk).values_list("site_id", flat=True).first()
    if old_site_id is not None and old_site_id != instance.site_id:
        _after_commit(instance.pk, old_site_id)


@receiver(post_save, sender=FAQ, dispatch_uid="semanticcache_faq_saved")
def faq_saved(sender: type[FAQ], instance: FAQ, **kwargs: Any) -> None:
    _after_commit(instance.pk, instance.site_id)


@receiver(post_delete, sender=FAQ, dispatch_uid="semanticcache_faq_deleted")
def faq_deleted(sender: type[FAQ], instance: FAQ, **kwargs: Any) -> None:
    _after_commit(instance.pk, instance.site_id)


@receiver(post_save, sender=FAQVariant, dispatch_uid="semanticcache_variant_saved")
@receiver(post_delete, sender=FAQVariant, dispatch_uid="semanticcache_variant_deleted")
def variant_changed(sender: type[FAQVariant], instance: FAQVariant, **kwargs: Any) -> None:
    faq = FAQ.objects.filter(pk=instance.faq_id).only("site_id").first()
    if faq is not None:
        _after_commit(instance.faq_id, faq.site_id)


@receiver(post_save, sender=Site, dispatch_uid="semanticcache_site_saved")
def site_saved(sender: type[Site], instance: Site, created: bool, **kwargs: Any) -> None:
    site_id, threshold = instance.pk, instance.cache_min_confidence
    transaction.on_commit(lambda: set_site_policy(site_id, threshold), robust=True)


@receiver(post_delete, sender=Site, dispatch_uid="semanticcache_site_deleted")
def site_deleted(sender: type[Site], instance: Site, **kwargs: Any) -> None:
    site_id = str(instance.pk)
    transaction.on_commit(lambda: get_cache().purge_site(site_id), robust=True)
