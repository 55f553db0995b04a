"""Fixtures of the cache tests: one loaded encoder per test session, caches on the real Redis.

Each cache built here uses its own key prefix, so tests never see each other's entries even
though they share the session's redis-server.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from cache import CacheConfig, SemanticCache
from cache.encoder import OnnxEncoder, load_encoder

ONNX_CACHE = Path(__file__).resolve().parents[2] / "var" / "cache-models"


@pytest.fixture(scope="session")
def encoder() -> OnnxEncoder:
    """The bundled all-MiniLM-L6-v2, loaded once for the whole test session."""
    return load_encoder(None, ONNX_CACHE)


@pytest.fixture
def make_cache(redis_url: str, encoder: OnnxEncoder) -> Iterator[Callable[..., SemanticCache]]:
    """Build SemanticCaches sharing one fresh key prefix (like processes of one deployment)."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    built: list[SemanticCache] = []

    def build(**overrides: object) -> SemanticCache:
        config = CacheConfig(key_prefix=prefix, **overrides)  # type: ignore[arg-type]
        cache = SemanticCache(redis_url, encoder, config)
        built.append(cache)
        return cache

    yield build
    for cache in built:
        cache.close()
    delete_prefix(redis_url, prefix)


def delete_prefix(redis_url: str, prefix: str) -> None:
    """Remove a test's keys (the redis-server is shared with the rest of the suite)."""
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def cache(make_cache: Callable[..., SemanticCache]) -> SemanticCache:
    return make_cache()


# A small FAQ set of a shop, reused across tests.
SHOP_FAQS = [
    (
        1,
        "How long does delivery take?",
        ["When will my parcel arrive?", "How many days until my order is delivered?"],
        "Standard delivery takes 3-5 working days.",
    ),
    (
        2,
        "How do I return an item?",
        ["Can I send back something I bought?", "What is your returns process?"],
        "Start a return from your account within 30 days of delivery.",
    ),
    (
        3,
        "Do you ship internationally?",
        ["Can you deliver abroad?", "Do you send orders to other countries?"],
        "We ship to 40 countries; see the shipping page for the list.",
    ),
    (
        4,
        "How do I reset my password?",
        ["I forgot my password", "Can't log in, need a new password"],
        "Use 'Forgot password' on the login page; the link is valid for 1 hour.",
    ),
]


def load_shop(cache: SemanticCache, site_id: str = "shop") -> None:
    for faq_id, question, variants, answer in SHOP_FAQS:
        cache.sync_faq(site_id, faq_id, 1, question, variants, answer, True)
