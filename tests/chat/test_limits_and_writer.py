"""The Redis counters of chat/limits.py and the group-commit writer, on the real Redis and
database (no consumer in between)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
import redis as redis_lib
from asgiref.sync import sync_to_async

from chatplatform.chat import config, limits
from chatplatform.chat.store import NewQuestion
from chatplatform.chat.writer import QuestionWriter
from chatplatform.conversations.models import Conversation, Message
from tests.chat.conftest import make_site

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]


async def test_presence_is_per_socket_so_a_double_leave_cannot_miscount() -> None:
    # given a socket that joined and left, and whose leave ran twice
    conversation = str(uuid.uuid4())
    await limits.join_conversation(conversation, "socket-a")
    await limits.leave_conversation(conversation, "socket-a")
    await limits.leave_conversation(conversation, "socket-a")
    # when another socket joins, it is present (a counter would be back at 0)
    await limits.join_conversation(conversation, "socket-b")
    assert await limits.someone_present(conversation)
    await limits.leave_conversation(conversation, "socket-b")
    assert not await limits.someone_present(conversation)


async def test_presence_survives_an_old_counter_left_by_an_earlier_version(
    redis_url: str,
) -> None:
    # given Redis kept across an upgrade, with the old presence counter of a conversation
    conversation = str(uuid.uuid4())
    redis_lib.Redis.from_url(redis_url).set(f"chat:presence:{conversation}", 2, ex=3600)
    # when a socket of that conversation joins again, it is present (no WRONGTYPE)
    await limits.join_conversation(conversation, "socket-a")
    assert await limits.someone_present(conversation)


async def test_presence_lasts_while_the_socket_talks(monkeypatch: pytest.MonkeyPatch) -> None:
    # given presence that lapses after 1 s without traffic
    monkeypatch.setattr(config, "PRESENCE_TTL_S", 1.0)
    conversation = str(uuid.uuid4())
    await limits.join_conversation(conversation, "socket-a")
    # when the socket keeps sending frames for longer than that
    for _ in range(3):
        await asyncio.sleep(0.5)
        assert await limits.allow_frame("203.0.113.7", "socket-a", conversation) is None
    # then it is still present; silent, it lapses
    assert await limits.someone_present(conversation)
    await asyncio.sleep(1.1)
    assert not await limits.someone_present(conversation)


async def test_traffic_pushes_back_the_connection_count_key_expiry(redis_url: str) -> None:
    # given a socket counted a while ago (its key's expiry nearly reached)
    assert await limits.open_connection("203.0.113.7", "socket-a")
    client = redis_lib.Redis.from_url(redis_url)
    key = "chat:connections:203.0.113.7"
    client.expire(key, 5)
    # when it pings, and later sends a message
    await limits.allow_frame("203.0.113.7", "socket-a", None)
    # then the key lives as long as the entry again, not only from the last open
    assert client.ttl(key) > config.CONNECTION_COUNT_TTL_S - 5
    client.expire(key, 5)
    await limits.allow_message(str(uuid.uuid4()), "203.0.113.7", "socket-a")
    assert client.ttl(key) > config.CONNECTION_COUNT_TTL_S - 5


def _conversation() -> tuple[int, str]:
    site = make_site(cache_enabled=False)
    conversation = Conversation.objects.create(site=site, visitor_id="v")
    return site.pk, str(conversation.pk)


async def test_writer_survives_a_cancelled_waiter() -> None:
    # given two questions waiting on the same batch
    site_id, conversation_id = await sync_to_async(_conversation)()

    def question(client_id: str) -> NewQuestion:
        return NewQuestion(
            site_id=site_id,
            conversation_id=conversation_id,
            client_message_id=client_id,
            text=f"question {client_id}",
            received_at=datetime.now(tz=UTC),
            cached=None,
            sla_ms=300,
        )

    writer = QuestionWriter()
    first = asyncio.create_task(writer.save(question("a")))
    second = asyncio.create_task(writer.save(question("b")))
    await asyncio.sleep(0)  # both queued
    # when the first one's socket goes away (its wait is cancelled)
    first.cancel()
    # then the second is still answered, and later saves too
    _, created = await asyncio.wait_for(second, timeout=5)
    assert created
    _, created = await asyncio.wait_for(writer.save(question("c")), timeout=5)
    assert created
    # and the cancelled one's question is stored all the same (its resend finds it)
    stored = await sync_to_async(Message.objects.filter(role="customer").count)()
    assert stored == 3
    assert first.cancelled()
