"""Keep the cache in line with FAQ and Site edits.

Every sync runs in `transaction.on_commit`: Django admin saves inline variants *after* the
FAQ's post_save, and a rolled-back edit must not reach the cache. `robust=True`: a Redis
outage is logged (and `manage.py rebuild_semantic_cache` repairs it) instead of failing an
admin's save that the database already committed.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from chatplatform.faq.models import FAQ, FAQVariant
from chatplatform.semanticcache.service import get_cache, set_site_policy, sync_faq_by_id
from chatplatform.tenants.models import Site


def _after_commit(faq_id: int, site_id: int) -> None:
    connection = transaction.get_connection()
    # One sync per FAQ per transaction, however many variants were saved with it.
    pending: set[tuple[int, int]] = connection.__dict__.setdefault("_semanticcache_pending", set())
    if (faq_id, site_id) in pending:
        return
    pending.add((faq_id, site_id))

    def run() -> None:
        pending.discard((faq_id, site_id))
        sync_faq_by_id(faq_id, site_id)

    transaction.on_commit(run, robust=True)


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
