"""End to end with the `openai` back end: the real platform (daphne, the CPU worker, an
inference worker with INFERENCE_BACKEND=openai) in front of the real vLLM CPU server serving
the offline model; the client is a real websocket client speaking the widget's protocol.

The platform runs on a Redis database of its own, so the session's in-process platform (if
another test started it) never takes these requests, and no FAQ is cached there: every
question misses the cache and goes to the server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from chatplatform.conversations.models import Message
from tests.chat.conftest import make_site, warm_up, ws_connect, ws_receive_type, ws_send
from tests.chat.test_end_to_end import wait_for
from tests.openai_server import SERVED_MODEL, VLLMServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.vllm]

REDIS_DB = 5
# Long answers, so that one is still being generated when its customer leaves.
MAX_NEW_TOKENS = 3000
MODEL_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def openai_platform(
    django_db_setup, django_db_blocker, redis_url: str, vllm_server: VLLMServer
) -> Iterator:
    from django.conf import settings
    from django.db import connection

    from tests.chat.platform import ChatPlatform

    url = redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    redis_lib.Redis.from_url(url).flushdb()
    var_dir = Path(settings.VAR_DIR)
    chat = ChatPlatform(connection.settings_dict["NAME"], url, var_dir, var_dir / "unused-model")
    chat.log_dir = var_dir / "logs" / "chat-openai-tests"
    chat.log_dir.mkdir(parents=True, exist_ok=True)
    chat.env.update(
        {
            "INFERENCE_BACKEND": "openai",
            "INFERENCE_OPENAI_BASE_URL": vllm_server.base_url,
            "INFERENCE_OPENAI_MODEL": SERVED_MODEL,
            "INFERENCE_MAX_NEW_TOKENS": str(MAX_NEW_TOKENS),
            "CHAT_MAX_NEW_TOKENS": str(MAX_NEW_TOKENS),
            "CHAT_CANCEL_GRACE_S": "1",
        }
    )
    try:
        chat.start()
        with django_db_blocker.unblock():
            warm_up(chat)
        # The warm-up's question went to the server too (nothing is cached here); its socket
        # closed, so it is cancelled after the grace period: wait for the server to be idle.
        wait_for(lambda: vllm_server.metrics()["vllm:num_requests_running"] == 0, 30, "idle")
        yield chat
    finally:
        chat.stop()


def test_novel_question_is_answered_by_the_server_streamed_and_stored(
    openai_platform, vllm_server: VLLMServer
) -> None:
    # given a customer on a site's widget
    site = make_site(sla_ms=20_000, cache_enabled=True)
    before = vllm_server.metrics()
    with ws_connect(openai_platform) as socket:
        ws_send(socket, {"type": "hello", "v": 1, "site_key": site.widget_key})
        ws_receive_type(socket, "welcome")
        # when a question that misses the cache arrives (no FAQ is cached on this platform)
        ws_send(socket, {"type": "message", "client_message_id": "o1", "text": "Do kayaks float?"})
        ack = ws_receive_type(socket, "ack")
        # then the server's answer streams: start, deltas, end with the whole text
        start = ws_receive_type(socket, "answer.start", timeout=MODEL_TIMEOUT_S)
        delta = ws_receive_type(socket, "answer.delta", timeout=MODEL_TIMEOUT_S)
        end = ws_receive_type(socket, "answer.end", timeout=MODEL_TIMEOUT_S)
    assert start["reply_to"] == ack["message_id"] == end["reply_to"]
    assert delta["text"] and end["text"].startswith(delta["text"])
    assert end["source"] == "llm" and end["ttft_ms"] is not None
    # and it was the server that generated it: one more request served there
    after = vllm_server.metrics()
    assert after["vllm:request_success_total"] == before["vllm:request_success_total"] + 1
    # and the CPU worker stored it, finalized, with the server's own token counts
    reply_id = end["message_id"]
    wait_for(
        lambda: Message.objects.filter(pk=reply_id, state="done", delivered=True).exists(),
        30,
        "the finalize task",
    )
    reply = Message.objects.get(pk=reply_id)
    assert reply.text == end["text"] and reply.source == "llm"
    prompt_tokens = after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"]
    assert reply.prompt_tokens == prompt_tokens > 0
    # (the offline model's greedy answer always runs to its length: the server's usage says so)
    generated = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert reply.completion_tokens == MAX_NEW_TOKENS <= generated


def test_closing_the_socket_stops_the_servers_generation(
    openai_platform, vllm_server: VLLMServer
) -> None:
    # given an answer the server is generating for a customer
    site = make_site(sla_ms=20_000)
    before = vllm_server.metrics()["vllm:generation_tokens_total"]
    with ws_connect(openai_platform) as socket:
        ws_send(socket, {"type": "hello", "v": 1, "site_key": site.widget_key})
        ws_receive_type(socket, "welcome")
        ws_send(socket, {"type": "message", "client_message_id": "o2", "text": "Is it windy?"})
        ws_receive_type(socket, "answer.delta", timeout=MODEL_TIMEOUT_S)
        assert vllm_server.metrics()["vllm:num_requests_running"] == 1
    # when the customer closes the widget (the socket closes; the grace period is 1 s here)
    closed_at = time.monotonic()
    # then the server stops generating it: nothing running, its token counter stands still
    wait_for(lambda: vllm_server.metrics()["vllm:num_requests_running"] == 0, 15, "the abort")
    stopped_after = time.monotonic() - closed_at
    generated = vllm_server.metrics()["vllm:generation_tokens_total"]
    time.sleep(1.0)
    assert vllm_server.metrics()["vllm:generation_tokens_total"] == generated
    # long before the answer's 3000 tokens (greedy decoding of the offline model never stops
    # early: it always runs to its length)
    assert generated - before < MAX_NEW_TOKENS
    assert stopped_after < 10
