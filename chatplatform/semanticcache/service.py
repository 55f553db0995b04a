"""The process's SemanticCache, configured from Django settings.

`get_cache()` builds it on first call (loads the encoder once, warms it up, rebuilds the
in-memory indexes from Redis, starts the sync thread) and returns the same object after.
Callers on the event loop should call it through a thread the first time (~1-2 s; the first
start on a machine also exports the ONNX model, ~20 s).
"""

from __future__ import annotations

import atexit
import threading
from pathlib import Path

import redis
from django.conf import settings

from cache import CacheConfig, FaqRecord, SemanticCache
from cache.encoder import load_encoder
from cache.store import Store

_cache: SemanticCache | None = None
_lock = threading.Lock()

# The ONNX export of the embedding model lives beside the other local state.
ONNX_CACHE_SUBDIR = "cache-models"


def _config() -> CacheConfig:
    return CacheConfig(
        max_rows_per_process=settings.CACHE_MAX_ROWS_PER_PROCESS,
        max_sites_per_process=settings.CACHE_MAX_SITES_PER_PROCESS,
    )


def get_cache() -> SemanticCache:
    global _cache
    if _cache is None:
        with _lock:
            if _cache is None:
                encoder = load_encoder(
                    settings.EMBEDDING_MODEL, Path(settings.VAR_DIR) / ONNX_CACHE_SUBDIR
                )
                _cache = SemanticCache(settings.REDIS_URL, encoder, _config())
                # Stop the sync thread and flush counters before interpreter teardown.
                atexit.register(_cache.close)
    return _cache


def set_site_policy(site_id: int, min_confidence: float | None) -> None:
    """Publish a site's threshold override without loading the encoder in this process.

    ValueError outside [0, 1] on either path (Store.set_policy checks), before anything is
    written: a saved Site skipped its model validation (`Site.objects.update`, a script).
    """
    if _cache is not None:
        _cache.set_site_policy(str(site_id), min_confidence)
        return
    config = _config()
    client = redis.Redis.from_url(
        settings.REDIS_URL,
        socket_connect_timeout=config.redis_connect_timeout_s,
        socket_timeout=config.redis_socket_timeout_s,
    )
    try:
        store = Store(client, config.key_prefix, config.change_stream_maxlen)
        store.set_policy(str(site_id), min_confidence)
        store.publish(str(site_id), "policy")
    finally:
        client.close()


def sync_site_policy(site_id: int) -> None:
    """Publish the site's threshold override as committed (nothing if the site is gone)."""
    from chatplatform.tenants.models import Site

    found = Site.objects.filter(pk=site_id).values_list("cache_min_confidence", flat=True)
    if found:
        set_site_policy(site_id, found[0])


def faq_record(faq) -> FaqRecord:  # noqa: ANN001 - a chatplatform.faq.models.FAQ
    return FaqRecord(
        faq_id=faq.pk,
        version=faq.version,
        question=faq.question,
        variants=[variant.text for variant in faq.variants.all()],
        answer=faq.answer,
        active=faq.is_active,
    )


def sync_faq_by_id(faq_id: int, site_id: int) -> None:
    """Bring site `site_id`'s cache in line with the FAQ as committed.

    The FAQ gone, or now on another site (an admin moved it): its entry leaves `site_id`.
    Otherwise (and also after a move, for the FAQ's new site) the entry is synced: refreshed,
    or removed when inactive.
    """
    from chatplatform.faq.models import FAQ

    faq = FAQ.objects.prefetch_related("variants").filter(pk=faq_id).first()
    cache = get_cache()
    if faq is None:
        cache.remove_faq(str(site_id), faq_id)
        return
    if faq.site_id != site_id:
        cache.remove_faq(str(site_id), faq_id, faq.version)
    record = faq_record(faq)
    cache.sync_faq(
        str(faq.site_id),
        record.faq_id,
        record.version,
        record.question,
        record.variants,
        record.answer,
        record.active,
    )


def rebuild_site(site) -> int:  # noqa: ANN001 - a chatplatform.tenants.models.Site
    """Make the site's FAQ entries in the cache match the database. Returns entries written."""
    from chatplatform.faq.models import FAQ

    faqs = FAQ.objects.filter(site=site).prefetch_related("variants")
    cache = get_cache()
    cache.set_site_policy(str(site.pk), site.cache_min_confidence)
    return cache.rebuild_site_faqs(str(site.pk), [faq_record(faq) for faq in faqs])
