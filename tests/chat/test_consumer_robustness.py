"""The consumer when things go wrong: failures on our side, reloads mid-answer, repeated or
scripted frames and silent sockets. Real ASGI app, channel layer, Redis and cache throughout;
a failure on our side is provoked by making one real step raise once."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError

from chatplatform.chat import answering, config, consumers, store, writer
from chatplatform.chat.tasks import finalize_answer
from chatplatform.conversations.models import Message
from inference.contracts import InferenceResult
from tests.chat.conftest import Client, queued_inference_requests
from tests.chat.test_consumer_answers import (
    NOVEL_QUESTION,
    ask,
    open_chat,
    site_with,
    wait_for_request,
    worker_events,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]


def fail_once(real: Any, error: Exception) -> Any:
    """`real`, except that its first call raises `error` (a database or Redis hiccup)."""
    calls = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise error
        return real(*args, **kwargs)

    return wrapper


def failed_result(request: dict[str, Any]) -> dict[str, Any]:
    return InferenceResult(
        conversation_id=request["conversation_id"],
        message_id=request["message_id"],
        site_id=request["site_id"],
        text="",
        finish_reason="error",
        prompt_tokens=40,
        completion_tokens=0,
        ttft_ms=None,
        total_ms=900.0,
        gpu_seconds=0.1,
    ).to_dict()


# --- finding: exceptions in worker-event handlers and timers --------------------------------


async def test_failing_worker_event_is_an_error_and_the_socket_stays_open(
    client: Client, chat_cache
) -> None:
    # given a customer waiting for a model answer
    site = await site_with(sla_ms=10_000)
    welcome = await client.hello(site)
    ack = await ask(client, NOVEL_QUESTION)
    # when the handler of a worker event fails (here: a result it cannot read)
    await worker_events(
        welcome["conversation_id"],
        {"type": "answer.end", "message_id": ack["message_id"], "result": {"bogus": 1}},
    )
    # then the customer is told, and the socket stays open and usable
    error = await client.receive_type("error")
    assert error["code"] == "internal_error"
    await client.assert_usable()


async def test_failing_timer_is_logged(
    client: Client, chat_cache, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # given a holding reply that cannot be written
    monkeypatch.setattr(
        answering, "holding_text", fail_once(answering.holding_text, RuntimeError("boom"))
    )
    site = await site_with(sla_ms=200)
    await client.hello(site)
    # when the holding timer fires
    with caplog.at_level(logging.ERROR, logger=consumers.logger.name):
        await ask(client, NOVEL_QUESTION)
        await asyncio.sleep(0.6)
    # then its failure is logged, not lost
    failures = [r for r in caplog.records if "holding timer failed" in r.getMessage()]
    assert failures and failures[0].exc_info is not None


# --- finding: repeated feedback and frame rate limits ----------------------------------------


async def test_repeated_feedback_reaches_the_cache_once_and_a_flip_cancels_it(
    client: Client, chat_cache
) -> None:
    # given a cached FAQ answer
    site = await site_with()
    await client.hello(site)
    await ask(client, "How long does shipping take?")
    answer = await client.receive_type("answer")
    entry_id = (await sync_to_async(Message.objects.get)(pk=answer["message_id"])).cache_entry_id
    before = chat_cache.get_entry(entry_id)

    async def vote(value: str) -> None:
        await client.send({"type": "feedback", "message_id": answer["message_id"], "value": value})
        assert (await client.receive())["type"] == "feedback.ok"

    # when the customer clicks "No" three times
    for _ in range(3):
        await vote("down")
    # then the cache heard one vote, and the entry is still served
    after = chat_cache.get_entry(entry_id)
    assert after.negative - before.negative == 1
    assert after.state == before.state
    # and a flip to "Yes" (twice) counts once, cancelling the "No" in the net score
    await vote("up")
    await vote("up")
    flipped = chat_cache.get_entry(entry_id)
    assert flipped.positive - before.positive == 1
    assert (flipped.negative - flipped.positive) == (before.negative - before.positive)
    stored = await sync_to_async(Message.objects.get)(pk=answer["message_id"])
    assert stored.feedback == 1


async def test_other_frames_are_rate_limited_per_socket(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a limit of three frames a minute besides messages
    monkeypatch.setattr(config, "FRAMES_PER_MINUTE_PER_CONNECTION", 3)
    site = await site_with(cache_enabled=False)
    await client.hello(site)  # 1
    await client.send({"type": "handoff"})  # 2
    assert (await client.receive())["type"] == "handoff.ok"
    await client.assert_usable()  # 3
    # when a fourth comes within the minute
    await client.send(
        {"type": "feedback", "message_id": "00000000-0000-0000-0000-000000000000", "value": "up"}
    )
    # then it is refused with rate_limited, and the socket stays open
    error = await client.receive()
    assert error["type"] == "error" and error["code"] == "rate_limited"
    await client.send({"type": "ping"})
    assert (await client.receive())["code"] == "rate_limited"


async def test_other_frames_are_rate_limited_per_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(config, "FRAMES_PER_MINUTE_PER_IP", 2)
    first, second, elsewhere = Client(), Client(), Client(client_ip="198.51.100.9")
    for chat in (first, second, elsewhere):
        await chat.connect()
    await first.assert_usable()
    await second.assert_usable()
    await first.send({"type": "ping"})
    assert (await first.receive())["code"] == "rate_limited"
    await elsewhere.assert_usable()  # another address is not affected
    for chat in (first, second, elsewhere):
        await chat.close()


# --- finding: silent sockets -----------------------------------------------------------------


async def test_silent_socket_is_closed_and_a_talking_one_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given sockets that stop counting after 0.6 s of silence
    monkeypatch.setattr(config, "CONNECTION_COUNT_TTL_S", 0.6)
    silent, talking = Client(), Client(client_ip="198.51.100.20")
    await silent.connect()
    await talking.connect()
    # when one stays silent and the other pings
    for _ in range(5):
        await asyncio.sleep(0.25)
        await talking.assert_usable()
    # then the silent one was closed by the server, the talking one is still open
    closed = await silent.communicator.receive_output(timeout=1)
    assert closed == {"type": "websocket.close", "code": consumers.CLOSE_IDLE}
    await talking.assert_usable()
    await talking.close()


# --- finding: resume after a reload ----------------------------------------------------------


async def test_resume_reports_an_answer_that_failed_while_away_once(
    chat_cache, redis_url: str
) -> None:
    # given a customer who asked, then reloaded while the model failed
    site = await site_with(sla_ms=10_000)
    first, welcome = await open_chat(site)
    ack = await ask(first, NOVEL_QUESTION, cid="lost")
    request = await wait_for_request(redis_url)
    await first.close()
    assert await sync_to_async(finalize_answer)(failed_result(request)) == "failed"
    # when they come back
    second, _ = await open_chat(site, conversation_id=welcome["conversation_id"])
    # then the failure is reported against their message
    error = await second.receive()
    assert error["type"] == "error" and error["code"] == "answer_failed"
    assert error["ref"] == "lost" and error["reply_to"] == ack["message_id"]
    await second.close()
    # and only once
    third, _ = await open_chat(site, conversation_id=welcome["conversation_id"])
    await third.assert_usable()
    await third.close()


async def test_resent_message_whose_answer_failed_is_reported_failed_not_queued(
    chat_cache, redis_url: str
) -> None:
    # given a question whose answer failed while the customer was away, reported on resume
    site = await site_with(sla_ms=300)
    first, welcome = await open_chat(site)
    ack = await ask(first, NOVEL_QUESTION, cid="failed")
    request = await wait_for_request(redis_url)
    await first.close()
    assert await sync_to_async(finalize_answer)(failed_result(request)) == "failed"
    second, _ = await open_chat(site, conversation_id=welcome["conversation_id"])
    assert (await second.receive())["code"] == "answer_failed"
    # when the widget resends the question (its ack was lost with the first socket)
    resent = await ask(second, NOVEL_QUESTION, cid="failed")
    # then it is told at once that the answer failed, against the message
    assert resent["duplicate"] is True and resent["message_id"] == ack["message_id"]
    error = await second.receive()
    assert error["type"] == "error" and error["code"] == "answer_failed"
    assert error["ref"] == "failed" and error["reply_to"] == ack["message_id"]
    # and it is not queued again: no holding reply after the 300 ms SLA, no late timeout
    await asyncio.sleep(0.5)
    await second.assert_usable()
    queued = [r["message_id"] for r in queued_inference_requests(redis_url)]
    assert queued == [ack["message_id"]]
    assert not await sync_to_async(
        Message.objects.filter(pk=store.reply_id_for(ack["message_id"], "holding")).exists
    )()
    await second.close()


async def test_resume_waits_for_an_unfinished_answer_and_reports_its_failure(
    chat_cache, redis_url: str
) -> None:
    # given a customer who asked, then reloaded before the model answered
    site = await site_with(sla_ms=10_000)
    first, welcome = await open_chat(site)
    ack = await ask(first, NOVEL_QUESTION, cid="waiting")
    await first.close()
    second, _ = await open_chat(site, conversation_id=welcome["conversation_id"])
    # when the worker then refuses the request
    await worker_events(
        welcome["conversation_id"],
        {"type": "answer.refused", "message_id": ack["message_id"], "code": "overloaded"},
    )
    # then the new socket reports it (a shed request: `overloaded`, inference/admission.py),
    # with the suggestions of a holding reply
    holding = await second.receive_type("holding")
    assert holding["reply_to"] == ack["message_id"] and holding["suggestions"]
    error = await second.receive_type("error")
    assert error["code"] == "overloaded" and error["ref"] == "waiting"
    await second.close()


async def test_resumed_answer_times_out_from_the_original_arrival(
    chat_cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "ANSWER_TIMEOUT_S", 1.5)
    site = await site_with(sla_ms=10_000)
    first, welcome = await open_chat(site)
    asked_at = time.monotonic()
    ack = await ask(first, NOVEL_QUESTION, cid="slow")
    await first.close()
    await asyncio.sleep(0.5)
    second, _ = await open_chat(site, conversation_id=welcome["conversation_id"])
    error = await second.receive_type("error", timeout=5)
    assert error["code"] == "answer_timeout" and error["reply_to"] == ack["message_id"]
    # measured from when the question arrived, not from the reconnect (+0.5 s)
    assert time.monotonic() - asked_at < 1.5 + 0.45
    reply = await sync_to_async(Message.objects.get)(pk=store.reply_id_for(ack["message_id"]))
    assert reply.state == "failed" and reply.delivered
    await second.close()


async def test_answer_resumed_mid_stream_gets_no_late_holding_reply(chat_cache) -> None:
    # given an answer whose text started streaming within the 1 s SLA
    site = await site_with(sla_ms=1_000)
    first, welcome = await open_chat(site)
    asked_at = time.monotonic()
    ack = await ask(first, NOVEL_QUESTION, cid="streaming")
    message_id = ack["message_id"]
    await worker_events(
        welcome["conversation_id"],
        {"type": "answer.start", "message_id": message_id},
        {"type": "answer.delta", "message_id": message_id, "text": "Parrots "},
    )
    await first.receive_type("answer.delta")
    # when the customer opens another page after the SLA deadline, mid-answer
    await first.close()
    await asyncio.sleep(max(0.0, asked_at + 1.2 - time.monotonic()))
    second, _ = await open_chat(site, conversation_id=welcome["conversation_id"])
    await asyncio.sleep(0.3)  # a holding timer armed on resume would have fired by now
    await worker_events(
        welcome["conversation_id"],
        {"type": "answer.delta", "message_id": message_id, "text": "travel free."},
        {
            "type": "answer.end",
            "message_id": message_id,
            "result": InferenceResult(
                conversation_id=welcome["conversation_id"],
                message_id=message_id,
                site_id=site.pk,
                text="Parrots travel free.",
                finish_reason="stop",
                prompt_tokens=40,
                completion_tokens=4,
                ttft_ms=150.0,
                total_ms=1500.0,
                gpu_seconds=0.2,
            ).to_dict(),
        },
    )
    # then the new page shows the rest of the answer and no holding reply
    seen = []
    while not seen or seen[-1]["type"] != "answer.end":
        seen.append(await second.receive())
    assert [frame["type"] for frame in seen] == ["answer.delta", "answer.end"]
    assert seen[-1]["text"] == "Parrots travel free."
    # with the worker's time to first token (the first text went out on the earlier socket)
    assert seen[-1]["ttft_ms"] == 150.0
    # and no fallback reply (a missed SLA) is stored for it
    holding_id = store.reply_id_for(message_id, "holding")
    assert not await sync_to_async(Message.objects.filter(pk=holding_id).exists)()
    await second.close()


# --- finding: internal errors on a message ---------------------------------------------------


async def test_internal_error_on_a_message_names_it_and_a_resend_succeeds(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a database that fails the next write once
    monkeypatch.setattr(
        writer, "save_questions", fail_once(writer.save_questions, OperationalError("locked"))
    )
    site = await site_with(cache_enabled=False)
    await client.hello(site)
    # when a message arrives
    await client.send({"type": "message", "client_message_id": "m1", "text": "Hello there"})
    # then the error names the message, so the client can send it again
    error = await client.receive()
    assert error["type"] == "error" and error["code"] == "internal_error" and error["ref"] == "m1"
    ack = await ask(client, "Hello there", cid="m1")
    assert ack["duplicate"] is False


async def test_message_whose_model_task_could_not_be_queued_is_queued_on_resend(
    client: Client, chat_cache, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a broker that refuses the next task once
    monkeypatch.setattr(
        answering,
        "_send_inference_sync",
        fail_once(answering._send_inference_sync, ConnectionError("broker down")),
    )
    site = await site_with(sla_ms=10_000)
    await client.hello(site)
    await client.send({"type": "message", "client_message_id": "q1", "text": NOVEL_QUESTION})
    error = await client.receive()
    assert error["code"] == "internal_error" and error["ref"] == "q1"
    # when the client sends it again, the stored message's task is queued this time
    ack = await ask(client, NOVEL_QUESTION, cid="q1")
    assert ack["duplicate"] is True
    queued = [r["message_id"] for r in queued_inference_requests(redis_url)]
    assert queued == [ack["message_id"]]


# --- finding: a hello that fails half-way ----------------------------------------------------


async def test_failed_hello_can_be_sent_again(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a database that fails while the welcome is put together
    monkeypatch.setattr(
        store, "quick_replies", fail_once(store.quick_replies, OperationalError("locked"))
    )
    site = await site_with(cache_enabled=False)
    await client.send({"type": "hello", "v": 1, "site_key": site.widget_key})
    assert (await client.receive())["code"] == "internal_error"
    # when the client says hello again, it is welcomed (not "already_hello")
    welcome = await client.hello(site)
    assert welcome["conversation_id"]


# --- finding: unvalidated strings ------------------------------------------------------------


async def test_hello_with_a_lone_surrogate_is_a_bad_field(client: Client) -> None:
    await client.send_raw(text='{"type": "hello", "v": 1, "site_key": "\\ud800"}')
    assert (await client.receive())["code"] == "bad_field"
    await client.assert_usable()
