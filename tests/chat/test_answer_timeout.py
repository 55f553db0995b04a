"""The answer timeout is one truth (docs/protocol.md): `answer_timeout` is final, the generation
is cancelled and no answer follows; when the model concluded first, its answer is delivered and
no timeout is sent. A timeout is only recorded as told to the customer when a live socket told
them; a finalize that comes after the failure does not turn it into an answer.

Over the real ASGI app, channel layer and Redis; the worker's side is played by the test as in
test_consumer_answers.py (the worker takes the same "answered" key before its final event)."""

from __future__ import annotations

import asyncio

import pytest
import redis as redis_lib
from asgiref.sync import sync_to_async

from chatplatform.chat import config, store
from chatplatform.chat.consumers import connection
from chatplatform.chat.tasks import finalize_answer
from chatplatform.conversations.models import Message
from inference.contracts import ANSWERED_TTL_S, answered_key, cancel_key
from tests.chat.test_consumer_answers import (
    NOVEL_QUESTION,
    ask,
    open_chat,
    result_for,
    site_with,
    wait_for_request,
    worker_events,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]


async def reply_of(message_id: str) -> Message:
    return await sync_to_async(Message.objects.get)(pk=store.reply_id_for(message_id))


async def test_the_timeout_closes_the_message_and_cancels_its_generation(
    chat_cache, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a question the model does not answer in time
    monkeypatch.setattr(config, "ANSWER_TIMEOUT_S", 0.5)
    site = await site_with(sla_ms=10_000)
    chat, _ = await open_chat(site)
    ack = await ask(chat, NOVEL_QUESTION, cid="late")
    request = await wait_for_request(redis_url, ack["message_id"])
    # when the timeout fires
    error = await chat.receive_type("error", timeout=5)
    assert error["code"] == "answer_timeout" and error["ref"] == "late"
    # then the message is closed where the worker looks before answering, and cancelled
    client = redis_lib.Redis.from_url(redis_url)
    assert client.get(answered_key(ack["message_id"])) == b"timeout"
    assert client.get(cancel_key(ack["message_id"])) == b"1"
    # and an answer that is finalized anyway (a worker that missed the key) stays untold
    assert await sync_to_async(finalize_answer)(result_for(request, "Too late.")) == "closed"
    reply = await reply_of(ack["message_id"])
    assert reply.state == "failed" and reply.text == "" and reply.delivered
    await chat.assert_usable()
    await chat.close()


async def test_an_answer_that_won_the_race_is_delivered_without_a_timeout(
    chat_cache, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a worker that concluded just before the timeout (it took the key first)
    monkeypatch.setattr(config, "ANSWER_TIMEOUT_S", 0.5)
    site = await site_with(sla_ms=10_000)
    chat, welcome = await open_chat(site)
    ack = await ask(chat, NOVEL_QUESTION, cid="close-call")
    request = await wait_for_request(redis_url, ack["message_id"])
    client = redis_lib.Redis.from_url(redis_url)
    client.set(answered_key(ack["message_id"]), "1", ex=ANSWERED_TTL_S)
    await asyncio.sleep(0.8)  # past the timeout
    # when its final event arrives afterwards
    await worker_events(
        welcome["conversation_id"],
        {
            "type": "answer.end",
            "message_id": ack["message_id"],
            "result": result_for(request, "Hi"),
        },
    )
    # then the customer gets the answer, and no timeout before or after it
    frame = await chat.receive()
    assert frame["type"] == "answer.end" and frame["text"] == "Hi"
    assert client.get(cancel_key(ack["message_id"])) is None
    await chat.assert_usable()
    await chat.close()


async def test_a_concluded_answer_that_never_comes_is_reported_failed(
    chat_cache, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a worker that took the key and died before sending anything
    monkeypatch.setattr(config, "ANSWER_TIMEOUT_S", 0.3)
    monkeypatch.setattr(config, "ANSWER_ON_ITS_WAY_S", 0.3)
    site = await site_with(sla_ms=10_000)
    chat, _ = await open_chat(site)
    ack = await ask(chat, NOVEL_QUESTION, cid="lost")
    redis_lib.Redis.from_url(redis_url).set(answered_key(ack["message_id"]), "1", ex=60)
    # then, once the answer had time to come, the customer is told it failed (once)
    error = await chat.receive_type("error", timeout=5)
    assert error["code"] == "answer_failed" and error["ref"] == "lost"
    assert (await reply_of(ack["message_id"])).state == "failed"
    await chat.assert_usable()
    await chat.close()


async def test_a_timeout_while_the_customer_is_away_is_told_on_their_return(
    chat_cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a socket whose application instance dies without `disconnect` (as when its channel
    # layer lost Redis: "Exception inside application") while an answer is pending
    monkeypatch.setattr(config, "ANSWER_TIMEOUT_S", 1.0)
    site = await site_with(sla_ms=10_000)
    first, welcome = await open_chat(site)
    ack = await ask(first, NOVEL_QUESTION, cid="away")

    async def crash(self, message) -> None:
        raise ConnectionError("Connection closed by server.")

    monkeypatch.setattr(connection.CustomerConnection, "websocket_receive", crash)
    await first.send({"type": "ping"})
    with pytest.raises(ConnectionError):
        await first.receive(timeout=5)
    monkeypatch.undo()
    monkeypatch.setattr(config, "ANSWER_TIMEOUT_S", 1.0)
    # when the timeout passes with nobody connected
    await asyncio.sleep(1.5)
    # then nothing was recorded as told to the customer
    reply = await reply_of(ack["message_id"])
    assert reply.state == "pending" and not reply.delivered
    # and on their return they are told, on the new socket, and that is what is recorded
    second, _ = await open_chat(site, conversation_id=welcome["conversation_id"])
    error = await second.receive_type("error", timeout=5)
    assert error["code"] == "answer_timeout" and error["ref"] == "away"
    reply = await reply_of(ack["message_id"])
    assert reply.state == "failed" and reply.delivered
    await second.close()


async def test_welcome_says_whether_answers_come_from_the_demo_model(client, settings) -> None:
    site = await site_with()
    settings.DEMO_MODEL = True
    assert (await client.hello(site))["demo_model"] is True
    settings.DEMO_MODEL = False
    other, welcome = await open_chat(site)
    assert welcome["demo_model"] is False
    await other.close()


async def test_an_answer_whose_finalize_was_delayed_is_delivered_not_timed_out(
    chat_cache, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given an answer the worker concluded (key taken, stream sent to nobody: the customer
    # was away), whose finalize task died with its CPU worker and is redelivered later
    monkeypatch.setattr(config, "ANSWER_TIMEOUT_S", 0.5)
    monkeypatch.setattr(config, "ANSWER_ON_ITS_WAY_S", 3.0)
    site = await site_with(sla_ms=10_000)
    first, welcome = await open_chat(site)
    ack = await ask(first, NOVEL_QUESTION, cid="finalize-late")
    request = await wait_for_request(redis_url, ack["message_id"])
    redis_lib.Redis.from_url(redis_url).set(answered_key(ack["message_id"]), "1", ex=60)
    await first.close()
    # when the customer comes back while the row is still pending (past the timeout)
    second, _ = await open_chat(site, conversation_id=welcome["conversation_id"])
    await asyncio.sleep(1.0)
    # and the redelivered finalize stores the answer
    assert await sync_to_async(finalize_answer)(result_for(request, "Stored late.")) == "stored"
    # then the customer gets that answer whole, and no timeout contradicts it
    frame = await second.receive_type("answer", timeout=5)
    assert frame["text"] == "Stored late." and frame["reply_to"] == ack["message_id"]
    await asyncio.sleep(config.ANSWER_ON_ITS_WAY_S)
    await second.assert_usable()
    reply = await reply_of(ack["message_id"])
    assert reply.state == "done" and reply.text == "Stored late." and reply.delivered
    await second.close()
