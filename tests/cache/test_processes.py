"""Several processes share one cache through Redis: each sees the other's changes within ~1 s.

The peer is a real separate Python process (tests/cache/peer.py) with its own SemanticCache,
encoder and in-memory index; the only thing the two share is the redis-server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cache import SemanticCache
from tests.cache.conftest import delete_prefix

pytestmark = pytest.mark.slow  # starts other processes that load the embedding model

ROOT = Path(__file__).resolve().parents[2]
VISIBLE_WITHIN_S = 1.0  # the bound for a change to reach every process
PEER_START_TIMEOUT_S = 60


class Peer:
    def __init__(self, redis_url: str, prefix: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.cache.peer", redis_url, prefix],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.strip() == "ready", f"peer failed to start: {line!r}"

    def ask(self, **command: object) -> dict:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_peer(redis_url: str, prefix: str) -> Iterator[Peer]:
    peer = Peer(redis_url, prefix)
    yield peer
    peer.close()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = f"p{uuid.uuid4().hex[:10]}"
    yield name
    delete_prefix(redis_url, name)


@pytest.fixture
def peer(redis_url: str, prefix: str) -> Iterator[Peer]:
    yield from start_peer(redis_url, prefix)


def wait_for(check: Callable[[], bool], timeout: float) -> float:
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"not visible within {timeout} s")
        time.sleep(0.01)
    return time.monotonic() - began


def test_two_processes_see_each_others_entries(
    redis_url: str, prefix: str, peer: Peer, encoder: object
) -> None:
    from cache import CacheConfig

    here = SemanticCache(redis_url, encoder, CacheConfig(key_prefix=prefix))  # type: ignore[arg-type]
    try:
        # peer writes, we see it
        peer.ask(op="sync_faq", args=["s1", 1, 1, "Do you ship abroad?", [], "Yes, to 40.", True])
        wait_for(lambda: here.lookup("s1", "Do you ship abroad?").hit, VISIBLE_WITHIN_S)
        # we write, peer sees it (an edit, then a removal)
        here.sync_faq("s1", 1, 2, "Do you ship abroad?", [], "Yes, to 50.", True)
        seen = peer.ask(
            op="wait", site="s1", question="Do you ship abroad?", answer="Yes, to 50.", timeout=5
        )
        assert seen["answer"] == "Yes, to 50." and seen["after_s"] < VISIBLE_WITHIN_S
        here.remove_faq("s1", 1)
        gone = peer.ask(
            op="wait", site="s1", question="Do you ship abroad?", answer=None, timeout=5
        )
        assert gone["answer"] is None and gone["after_s"] < VISIBLE_WITHIN_S
    finally:
        here.close()


def test_a_new_process_rebuilds_its_index_from_redis(
    redis_url: str, make_cache: Callable[..., SemanticCache]
) -> None:
    first = make_cache()
    first.sync_faq("s2", 5, 1, "Can I pay with PayPal?", ["PayPal accepted?"], "Yes.", True)
    peer = Peer(redis_url, first.config.key_prefix)
    try:
        assert peer.ask(op="lookup", site="s2", question="PayPal accepted?")["hit"] is True
    finally:
        peer.close()
