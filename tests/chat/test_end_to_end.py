"""End to end through the real processes: daphne, Redis, the CPU worker and the inference
worker running the offline model; the client is a real websocket client."""

from __future__ import annotations

import time

import pytest

from chatplatform.conversations.models import Message
from tests.chat.conftest import make_site, ws_connect, ws_receive_type, ws_send

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

MODEL_TIMEOUT_S = 60  # the first answer of a fresh worker on a loaded 2-core box


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_faq_question_is_answered_from_the_cache(platform) -> None:
    site = make_site()
    with ws_connect(platform) as socket:
        ws_send(socket, {"type": "hello", "v": 1, "site_key": site.widget_key})
        ws_receive_type(socket, "welcome")
        ws_send(
            socket,
            {"type": "message", "client_message_id": "e1", "text": "How long does shipping take?"},
        )
        answer = ws_receive_type(socket, "answer", timeout=30)
    assert answer["source"] == "faq"
    assert answer["text"] == "Standard shipping takes 3-5 business days."


def test_novel_question_is_streamed_from_the_model_and_finalized(platform) -> None:
    # given a site with a generous SLA (the test box is shared; SLA figures are the benchmark's)
    site = make_site(sla_ms=20_000)
    with ws_connect(platform) as socket:
        ws_send(socket, {"type": "hello", "v": 1, "site_key": site.widget_key})
        ws_receive_type(socket, "welcome")
        # when a question no FAQ answers arrives
        ws_send(
            socket,
            {"type": "message", "client_message_id": "e2", "text": "Do you sell kayaks in winter?"},
        )
        ack = ws_receive_type(socket, "ack")
        # then the model's answer streams: start, at least one delta, end with the whole text
        start = ws_receive_type(socket, "answer.start", timeout=MODEL_TIMEOUT_S)
        delta = ws_receive_type(socket, "answer.delta", timeout=MODEL_TIMEOUT_S)
        end = ws_receive_type(socket, "answer.end", timeout=MODEL_TIMEOUT_S)
    assert start["reply_to"] == ack["message_id"] == end["reply_to"]
    assert delta["text"] and end["text"].startswith(delta["text"])
    assert end["source"] == "llm" and end["ttft_ms"] is not None
    # and the CPU worker persisted it with its timings and token counts
    reply_id = end["message_id"]

    def finalized() -> bool:
        return Message.objects.filter(pk=reply_id, state="done", delivered=True).exists()

    wait_for(finalized, 30, "the finalize task")
    reply = Message.objects.get(pk=reply_id)
    assert reply.text == end["text"] and reply.source == "llm"
    assert reply.completion_tokens > 0 and reply.prompt_tokens > 0
    assert (
        reply.ttft_ms is not None and reply.total_ms >= reply.ttft_ms and reply.sla_met is not None
    )


def test_answer_finished_while_away_is_delivered_on_resume(platform) -> None:
    # given a customer who asks and drops the connection before the model starts
    site = make_site(sla_ms=20_000)
    platform.pause("worker-inference")
    try:
        with ws_connect(platform) as socket:
            ws_send(socket, {"type": "hello", "v": 1, "site_key": site.widget_key})
            welcome = ws_receive_type(socket, "welcome")
            ws_send(
                socket, {"type": "message", "client_message_id": "e3", "text": "Can I rent a tent?"}
            )
            ack = ws_receive_type(socket, "ack")
    finally:
        platform.resume("worker-inference")
    # when the answer is finished and stored while they are away
    question = ack["message_id"]
    wait_for(
        lambda: Message.objects.filter(
            in_reply_to_id=question, source="llm", state="done"
        ).exists(),
        MODEL_TIMEOUT_S,
        "the answer to be stored",
    )
    # then reconnecting with the conversation id delivers it, once
    with ws_connect(platform) as socket:
        ws_send(
            socket,
            {
                "type": "hello",
                "v": 1,
                "site_key": site.widget_key,
                "conversation_id": welcome["conversation_id"],
            },
        )
        assert ws_receive_type(socket, "welcome")["resumed"] is True
        answer = ws_receive_type(socket, "answer")
    stored = Message.objects.get(in_reply_to_id=question, source="llm")
    assert answer["reply_to"] == question and answer["text"] == stored.text
    wait_for(lambda: Message.objects.get(pk=stored.pk).delivered, 10, "the delivery to be recorded")


def test_an_idle_socket_outlives_the_redis_client_timeout(platform) -> None:
    # redis-py 8 reads with a 5 s timeout by default, which used to kill idle consumers
    site = make_site()
    with ws_connect(platform) as socket:
        ws_send(socket, {"type": "hello", "v": 1, "site_key": site.widget_key})
        ws_receive_type(socket, "welcome")
        time.sleep(6.5)
        ws_send(socket, {"type": "ping"})
        assert ws_receive_type(socket, "pong")["type"] == "pong"
