"""Fixtures of the chat tests: sites, websocket communicators on the real ASGI app and channel
layer (the session's real redis-server), and helpers to read what the consumer queued."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis as redis_lib
from channels.testing import WebsocketCommunicator

from chatplatform.faq.models import FAQ, FAQVariant
from chatplatform.tenants.models import Site

ORIGIN = "https://shop.example"
RECEIVE_TIMEOUT_S = 10.0  # generous: the shared 2-core test box is often loaded


@pytest.fixture(autouse=True)
def _clean_chat_keys(redis_url: str) -> None:
    """Rate-limit counters and queued tasks of one test must not leak into the next (the
    cache's own keys stay: its entries follow the FAQs through its signals)."""
    client = redis_lib.Redis.from_url(redis_url)
    keys = [*client.scan_iter("chat:*"), *client.scan_iter("inference*")]
    if keys:
        client.delete(*keys)


def make_site(*, cache_enabled: bool = True, sla_ms: int = 300, name: str = "Test shop") -> Site:
    site = Site.objects.create(
        name=name, allowed_origins=[ORIGIN], cache_enabled=cache_enabled, sla_ms=sla_ms
    )
    faq = FAQ.objects.create(
        site=site,
        question="How long does shipping take?",
        answer="Standard shipping takes 3-5 business days.",
    )
    FAQVariant.objects.create(faq=faq, text="When will my order arrive?")
    return site


class Client:
    """A websocket client of the real ASGI application, speaking protocol v1."""

    def __init__(self, origin: str = ORIGIN, client_ip: str = "203.0.113.7") -> None:
        from chatplatform.asgi import application

        self.communicator = WebsocketCommunicator(
            application, "/ws/chat/", headers=[(b"origin", origin.encode())]
        )
        self.communicator.scope["client"] = (client_ip, 50000)

    async def connect(self) -> None:
        connected, _ = await self.communicator.connect()
        assert connected

    async def send(self, frame: dict[str, Any]) -> None:
        await self.communicator.send_to(text_data=json.dumps(frame))

    async def send_raw(self, text: str | None = None, data: bytes | None = None) -> None:
        await self.communicator.send_to(text_data=text, bytes_data=data)

    async def receive(self, timeout: float = RECEIVE_TIMEOUT_S) -> dict[str, Any]:
        return json.loads(await self.communicator.receive_from(timeout=timeout))

    async def receive_type(self, kind: str, timeout: float = RECEIVE_TIMEOUT_S) -> dict[str, Any]:
        """The next frame of type `kind` (frames of other types before it are skipped)."""
        while True:
            frame = await self.receive(timeout)
            if frame["type"] == kind:
                return frame

    async def hello(self, site: Site, conversation_id: str | None = None) -> dict[str, Any]:
        await self.send(
            {
                "type": "hello",
                "v": 1,
                "site_key": site.widget_key,
                "conversation_id": conversation_id,
            }
        )
        welcome = await self.receive()
        assert welcome["type"] == "welcome", welcome
        return welcome

    async def assert_usable(self) -> None:
        """The socket still answers: the error left the connection open."""
        await self.send({"type": "ping"})
        assert (await self.receive())["type"] == "pong"

    async def close(self) -> None:
        await self.communicator.disconnect()


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    chat = Client()
    await chat.connect()
    yield chat
    await chat.close()


def queued_inference_requests(redis_url: str) -> list[dict[str, Any]]:
    """InferenceRequest dicts waiting on the broker's `inference` queue (Celery's Redis list)."""
    import base64

    client = redis_lib.Redis.from_url(redis_url)
    requests = []
    for raw in client.lrange("inference", 0, -1):
        envelope = json.loads(raw)
        body = json.loads(base64.b64decode(envelope["body"]))
        args = body[0]
        requests.append(args[0])
    return requests


@pytest.fixture(scope="session")
def chat_cache():
    """The process's real semantic cache, loaded once for the session (encoder included)."""
    from chatplatform.chat import answering

    return answering.get_cache_sync()


@pytest.fixture(scope="session")
def platform(django_db_setup, django_db_blocker, redis_url: str):
    """daphne + CPU worker + inference worker (offline model) on the test DB and Redis."""
    import subprocess
    import sys
    from pathlib import Path

    from django.conf import settings
    from django.db import connection

    from tests.chat.platform import ChatPlatform

    var_dir = Path(settings.VAR_DIR)
    model_dir = var_dir / "models" / "tiny-deepseek"
    subprocess.run(
        [sys.executable, "-m", "inference.build_model", "--out", str(model_dir)],
        check=True,
        capture_output=True,
    )
    chat = ChatPlatform(connection.settings_dict["NAME"], redis_url, var_dir, model_dir)
    try:
        chat.start()
        with django_db_blocker.unblock():
            warm_up(chat)
        yield chat
    finally:
        chat.stop()


def warm_up(chat) -> None:
    """One FAQ question through the web process, so its cache (encoder) is loaded before the
    tests measure anything; the throwaway site is deleted again."""
    site = make_site(name="warm-up")
    try:
        with ws_connect(chat) as socket:
            ws_send(socket, {"type": "hello", "v": 1, "site_key": site.widget_key})
            ws_receive_type(socket, "welcome", timeout=30)
            ws_send(socket, {"type": "message", "client_message_id": "w", "text": "hello?"})
            ws_receive_type(socket, "ack", timeout=120)
    finally:
        site.delete()


def ws_connect(chat, origin: str = ORIGIN):
    from websockets.sync.client import connect

    return connect(chat.ws_url, origin=origin, open_timeout=10)


def ws_send(socket, frame: dict[str, Any]) -> None:
    socket.send(json.dumps(frame))


def ws_receive_type(socket, kind: str, timeout: float = RECEIVE_TIMEOUT_S) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(socket.recv(timeout=max(0.01, deadline - time.monotonic())))
        if frame["type"] == kind:
            return frame


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, one per test module (tests/browser.py)."""
    from tests.browser import chromium

    with chromium() as launched:
        yield launched


@pytest.fixture
def demo_site(platform):
    """The site the demo page embeds, allowing the platform's origin."""
    site = make_site(sla_ms=20_000, name="Northwind Outfitters (demo shop)")
    site.allowed_origins = [platform.base_url]
    site.save()
    return site


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the session's real platform run after the in-process ones.

    The platform (started once, kept for the session) has a real inference worker on the
    session's Redis: once it runs, it takes the inference tasks that the in-process consumer
    tests read off the queue to play the worker's part. Sorting by file name is not enough
    (tests/chat/test_agents_* use the platform too), so the order is set here.
    """
    in_process = [item for item in items if "platform" not in getattr(item, "fixturenames", ())]
    on_platform = [item for item in items if "platform" in getattr(item, "fixturenames", ())]
    items[:] = in_process + on_platform
