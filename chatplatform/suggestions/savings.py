"""GPU time saved by suggestions: a generation cut short by a chosen suggestion is credited
(on the suggestion's record, for the dashboard, and in Redis, for Prometheus) once the
inference worker reports what it used (the finalize task, chat/tasks.py)."""

from __future__ import annotations

import logging

import redis
from django.conf import settings

from chatplatform.metrics import GPU_SECONDS_SAVED_KEY
from chatplatform.suggestions import offers
from inference.contracts import InferenceResult

logger = logging.getLogger(__name__)


def settle_generation(result: InferenceResult, site_id: int) -> float:
    """A model answer ended: if a chosen suggestion asked it to stop, credit the GPU seconds
    that saved (0 when it was no choice's, or finished first). Returns them."""
    cancelled = result.finish_reason == "cancelled"
    saved = offers.settle_cancellation(result.message_id, site_id, cancelled, result.gpu_seconds)
    if saved <= 0:
        return 0.0
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
        try:
            client.incrbyfloat(GPU_SECONDS_SAVED_KEY, saved)
        finally:
            client.close()
    except redis.RedisError:
        # The dashboard's figure is stored; only the Prometheus counter misses this one.
        logger.warning("suggestions: GPU seconds saved not counted in Redis", exc_info=True)
    return saved
