"""Keep the cache in line with FAQ and Site edits.

Every sync runs in `transaction.on_commit`: Django admin saves inline variants *after* the
FAQ's post_save, and a rolled-back edit must not reach the cache. A sync that fails because
Redis is unreachable is retried from a thread for a few minutes (`RETRY_DELAYS_S`): logging it
and moving on left a deactivated FAQ served in every process until someone ran
`manage.py rebuild_semantic_cache`. The admin's save, which the database already committed,
never fails for it (`robust=True` logs any other error).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import redis
from django.db import connection, transaction
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from chatplatform.faq.models import FAQ, FAQVariant, faqs_bulk_changed
from chatplatform.semanticcache.service import get_cache, sync_faq_by_id, sync_site_policy
from chatplatform.tenants.models import Site

logger = logging.getLogger(__name__)

# Pauses before each retry of a sync that met a Redis error (about 4 minutes in all). Every
# retry reads the database as committed *then*, so a late retry never restores an older state.
RETRY_DELAYS_S: tuple[float, ...] = (1.0, 2.0, 5.0, 15.0, 30.0, 60.0, 120.0)


def _run_with_retries(what: str, sync: Callable[[], None], attempt: int = 0) -> None:
    try:
        sync()
    except redis.RedisError:
        if attempt >= len(RETRY_DELAYS_S):
            logger.exception(
                "cache: %s failed %d times; run manage.py rebuild_semantic_cache",
                what,
                attempt + 1,
            )
            return
        delay = RETRY_DELAYS_S[attempt]
        logger.warning("cache: %s failed; retrying in %.0f s", what, delay, exc_info=True)
        timer = threading.Timer(delay, _retry, args=(what, sync, attempt + 1))
        timer.daemon = True
        timer.start()


def _retry(what: str, sync: Callable[[], None], attempt: int) -> None:
    try:
        _run_with_retries(what, sync, attempt)
    except Exception:
        logger.exception("cache: %s failed", what)
    finally:
        connection.close()  # this thread's own database connection


def _on_commit(what: str, sync: Callable[[], None]) -> None:
    transaction.on_commit(lambda: _run_with_retries(what, sync), robust=True)


def _after_commit(faq_id: int, site_id: int) -> None:
    # One sync per saved row (an FAQ and each of its variants), not one per transaction: the
    # sync reads the FAQ as committed and is idempotent, so the repeats cost a few Redis
    # writes, while remembering "already scheduled" outside the transaction went stale when
    # it rolled back (the callbacks are dropped, the memory was not, and later saves of that
    # FAQ on the same connection were never synced).
    _on_commit(f"sync of FAQ {faq_id} (site {site_id})", lambda: sync_faq_by_id(faq_id, site_id))


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


@receiver(faqs_bulk_changed, sender=FAQ, dispatch_uid="semanticcache_faqs_bulk_changed")
def faqs_bulk_written(sender: type[FAQ], rows: list[tuple[int, int]], **kwargs: Any) -> None:
    """QuerySet.update()/bulk_update()/bulk_create() of FAQs or variants (no post_save)."""
    for faq_id, site_id in rows:
        _after_commit(faq_id, site_id)  # the site before the write: a move leaves it too


@receiver(post_save, sender=FAQVariant, dispatch_uid="semanticcache_variant_saved")
@receiver(post_delete, sender=FAQVariant, dispatch_uid="semanticcache_variant_deleted")
def variant_changed(sender: type[FAQVariant], instance: FAQVariant, **kwargs: Any) -> None:
    faq = FAQ.objects.filter(pk=instance.faq_id).only("site_id").first()
    if faq is not None:
        _after_commit(instance.faq_id, faq.site_id)


@receiver(post_save, sender=Site, dispatch_uid="semanticcache_site_saved")
def site_saved(sender: type[Site], instance: Site, created: bool, **kwargs: Any) -> None:
    site_id = instance.pk
    _on_commit(f"threshold of site {site_id}", lambda: sync_site_policy(site_id))


@receiver(post_delete, sender=Site, dispatch_uid="semanticcache_site_deleted")
def site_deleted(sender: type[Site], instance: Site, **kwargs: Any) -> None:
    site_id = str(instance.pk)
    _on_commit(f"purge of deleted site {site_id}", lambda: get_cache().purge_site(site_id))
