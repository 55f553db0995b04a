"""Helpers of the human-agent tests: staff users with site access, and a websocket client of
the agent endpoint signed in the real way (a session cookie from Django's login)."""

from __future__ import annotations

import time
from typing import Any

from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from tests.chat.conftest import Client

PLATFORM_ORIGIN = "http://127.0.0.1"  # the agent socket only accepts the platform's own pages


def make_agent(username: str, sites: list[Any], *, staff: bool = True, first_name: str = ""):
    from django.contrib.auth import get_user_model

    from chatplatform.dashboards.models import SiteAccess

    user = get_user_model().objects.create_user(
        username=username, password="pw-" + username, is_staff=staff, first_name=first_name
    )
    for site in sites:
        SiteAccess.objects.create(user=user, site=site)
    return user


def session_cookie(user) -> str:  # noqa: ANN001 - a Django user
    from django.test import Client as HttpClient

    http = HttpClient()
    http.force_login(user)
    return http.cookies["sessionid"].value


def eventually(predicate, what: str, timeout_s: float = 30.0):  # noqa: ANN001, ANN201
    """The predicate's first truthy value, polled (another process writes what it reads)."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


class AgentClient(Client):
    """The inbox's socket, as the inbox page opens it (cookie + same-origin); frames are sent
    and read as the customer's test client does."""

    def __init__(self, cookie: str | None, origin: str = PLATFORM_ORIGIN) -> None:
        from chatplatform.asgi import application

        headers = [(b"origin", origin.encode()), (b"host", b"127.0.0.1")]
        if cookie is not None:
            headers.append((b"cookie", f"sessionid={cookie}".encode()))
        self.communicator = WebsocketCommunicator(application, "/ws/agent/", headers=headers)

    @classmethod
    async def signed_in(cls, user) -> AgentClient:  # noqa: ANN001 - a Django user
        agent = cls(await sync_to_async(session_cookie)(user))
        connected, code = await agent.communicator.connect()
        assert connected, code
        agent.inbox = await agent.receive_type("inbox")
        return agent

    async def act(self, kind: str, conversation_id: str) -> dict[str, Any]:
        """Send an action and return its answer (`<kind>.ok` or an error)."""
        await self.send({"type": kind, "conversation_id": conversation_id})
        while True:
            frame = await self.receive()
            if frame["type"] in (f"{kind}.ok", "error"):
                return frame

    async def reply(self, conversation_id: str, text: str, cid: str) -> dict[str, Any]:
        await self.send(
            {
                "type": "reply",
                "conversation_id": conversation_id,
                "client_message_id": cid,
                "text": text,
            }
        )
        while True:
            frame = await self.receive()
            if frame["type"] in ("reply.ok", "error"):
                return frame

    async def message_with(self, text_start: str) -> dict[str, Any]:
        """The next transcript message (of the open conversation) whose text starts so."""
        while True:
            frame = await self.receive_type("messages")
            for message in frame["messages"]:
                if str(message["text"]).startswith(text_start):
                    return message

    async def nothing_more(self, timeout: float = 0.3) -> bool:
        return await self.communicator.receive_nothing(timeout=timeout)
