"""Shared fixtures. The test settings profile (chatplatform/settings/test.py) has already
started this session's own real redis-server and exported it as TEST_REDIS_URL (and REDIS_URL)
for this process and every subprocess the tests start; the suite needs no Redis installed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the session's real redis-server (database 0)."""
    from django.conf import settings

    assert os.environ["TEST_REDIS_URL"] == settings.REDIS_URL  # settings point at our server
    return os.environ["TEST_REDIS_URL"]


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis_lib.Redis]:
    """A client on a clean database: flushed before each test that asks for it, and after it,
    so that what a test left (say, junk queued on the `inference` list) never reaches the
    workers of a platform started later in the session."""
    client = redis_lib.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The real vLLM CPU server serving the offline model, once per session (skips, with the
    reason, only where `make vllm-server` could not install it)."""
    from embedded_redis import free_port
    from inference.build_model import build
    from tests.openai_server import VLLMServer, require_server

    require_server()
    model_dir = build(tmp_path_factory.mktemp("vllm-model") / "tiny-deepseek")
    log = tmp_path_factory.mktemp("vllm-logs") / "vllm.log"
    # It shares this machine's cores with the platforms the tests start: on one core, at the
    # lowest priority (on 2 cores, at full speed, it stalled a process beside it for up to
    # 3.4 s; pinned and niced, 2-3 ms in 3 of 3 runs).
    server = VLLMServer(model_dir, free_port(), log, niceness=19, cpu=0)
    try:
        server.start()
        yield server
    finally:
        server.kill()
