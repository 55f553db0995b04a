"""The consumer's validation and protection, over the real ASGI app, channel layer and Redis.

Each bad input is answered with its error code, the socket stays usable, and nothing invalid
is stored. These tests use a site with the cache turned off and never reach the model path.
"""

from __future__ import annotations

import json

import pytest

from chatplatform.chat import config
from chatplatform.conversations.models import Conversation, Message
from tests.chat.conftest import Client, make_site

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]


async def make_site_async(**kwargs):
    from asgiref.sync import sync_to_async

    return await sync_to_async(make_site)(**kwargs)


async def count(model, **filters) -> int:
    from asgiref.sync import sync_to_async

    return await sync_to_async(model.objects.filter(**filters).count)()


async def test_hello_opens_a_conversation_with_greeting_and_quick_replies(client: Client) -> None:
    site = await make_site_async(cache_enabled=False)
    welcome = await client.hello(site)
    assert welcome["v"] == 1 and welcome["resumed"] is False
    assert welcome["greeting"] == site.greeting
    assert welcome["quick_replies"][0]["question"] == "How long does shipping take?"
    assert await count(Conversation, pk=welcome["conversation_id"], site=site) == 1


async def test_unknown_site_then_valid_hello_on_the_same_socket(client: Client) -> None:
    site = await make_site_async(cache_enabled=False)
    await client.send({"type": "hello", "v": 1, "site_key": "pk_does_not_exist"})
    error = await client.receive()
    assert error["type"] == "error" and error["code"] == "unknown_site"
    await client.hello(site)


async def test_origin_not_allowed() -> None:
    site = await make_site_async(cache_enabled=False)
    stranger = Client(origin="https://evil.example")
    await stranger.connect()
    await stranger.send({"type": "hello", "v": 1, "site_key": site.widget_key})
    error = await stranger.receive()
    assert error["code"] == "origin_not_allowed"
    await stranger.assert_usable()
    assert await count(Conversation) == 0
    await stranger.close()


@pytest.mark.parametrize(
    ("change", "code"),
    [({"is_active": False}, "unknown_site"), ({"allowed_origins": []}, "origin_not_allowed")],
)
async def test_a_site_switched_off_during_a_chat_refuses_its_next_message(
    client: Client, monkeypatch: pytest.MonkeyPatch, change: dict[str, object], code: str
) -> None:
    """An open chat re-reads its site (config.SITE_REFRESH_S): an admin deactivating the site,
    or removing the page's origin, stops open widgets too, and the refused message is not
    stored."""
    from asgiref.sync import sync_to_async

    from chatplatform.tenants.models import Site

    site = await make_site_async(cache_enabled=False)
    await client.hello(site)
    monkeypatch.setattr(config, "SITE_REFRESH_S", 0.0)
    await sync_to_async(Site.objects.filter(pk=site.pk).update)(**change)
    await client.send({"type": "message", "client_message_id": "c1", "text": "Still there?"})
    error = await client.receive()
    assert (error["type"], error["code"], error["ref"]) == ("error", code, "c1")
    assert await count(Message) == 0


async def test_message_before_hello_is_refused(client: Client) -> None:
    await client.send({"type": "message", "client_message_id": "c1", "text": "hi"})
    assert (await client.receive())["code"] == "hello_required"
    await client.assert_usable()


@pytest.mark.parametrize(
    ("raw", "data", "code"),
    [
        ("{oops", None, "bad_json"),
        ('{"type": "sudo"}', None, "unknown_type"),
        (None, b"\x00\x01binary", "binary_not_supported"),
        (
            json.dumps({"type": "message", "client_message_id": "c1", "text": "x" * 2001}),
            None,
            "message_too_long",
        ),
        (
            json.dumps({"type": "message", "client_message_id": "c1", "text": "   "}),
            None,
            "empty_message",
        ),
        (json.dumps({"type": "message", "client_message_id": "", "text": "hi"}), None, "bad_field"),
        ("x" * (config.MAX_FRAME_BYTES + 10), None, "frame_too_large"),
    ],
)
async def test_bad_input_gets_its_code_and_the_socket_stays_usable(
    client: Client, raw: str | None, data: bytes | None, code: str
) -> None:
    # given a chat that has said hello
    site = await make_site_async(cache_enabled=False)
    await client.hello(site)
    # when a bad frame arrives
    await client.send_raw(text=raw, data=data)
    # then it is answered with its code, nothing is stored, and the socket still works
    error = await client.receive()
    assert error["type"] == "error" and error["code"] == code and error["message"]
    assert await count(Message) == 0
    await client.assert_usable()


async def test_feedback_on_unknown_message(client: Client) -> None:
    site = await make_site_async(cache_enabled=False)
    await client.hello(site)
    await client.send(
        {"type": "feedback", "message_id": "00000000-0000-0000-0000-000000000000", "value": "up"}
    )
    assert (await client.receive())["code"] == "unknown_message"
    await client.assert_usable()


async def test_handoff_is_recorded(client: Client) -> None:
    site = await make_site_async(cache_enabled=False)
    welcome = await client.hello(site)
    await client.send({"type": "handoff"})
    assert (await client.receive())["type"] == "handoff.ok"
    assert await count(Conversation, pk=welcome["conversation_id"], status="handoff") == 1


async def test_connections_per_ip_are_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a limit of two sockets per address
    monkeypatch.setattr(config, "CONNECTIONS_PER_IP", 2)
    first, second, third = Client(), Client(), Client()
    await first.connect()
    await second.connect()
    # when a third opens
    await third.connect()
    # then it is told why and closed; the first two still work
    error = await third.receive()
    assert error["code"] == "too_many_connections"
    assert (await third.communicator.receive_output(timeout=2))["type"] == "websocket.close"
    await first.assert_usable()
    await second.close()
    # and a closed socket frees its slot
    fourth = Client()
    await fourth.connect()
    await fourth.assert_usable()
    for chat in (first, fourth):
        await chat.close()


async def test_deeply_nested_frames_are_refused_without_a_traceback(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    site = await make_site_async(cache_enabled=False)
    nested_hello = '{"type": "hello", "v": 1, "site_key": "k", "x": ' + "{" * 1400 + "}" * 1401
    for frame in ("[" * 1000 + "]" * 1000, nested_hello):
        await client.send_raw(text=frame)
        error = await client.receive()
        assert error["type"] == "error" and error["code"] == "bad_json"
    await client.hello(site)  # the socket is still usable, the hello still possible
    assert not [r for r in caplog.records if r.exc_info or "Recursion" in r.getMessage()]
