"""The finalize task's offer to the cache: only a conversation's first question, and who asked
(the widget's visitor id, else the client's address). Real database, Redis and cache."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async

from chatplatform.chat.tasks import finalize_answer
from tests.chat.conftest import Client, make_site
from tests.chat.test_consumer_answers import ask, result_for, wait_for_request

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]


async def answered(client: Client, redis_url: str, question: str, cid: str) -> dict[str, Any]:
    ack = await ask(client, question, cid=cid)
    request = await wait_for_request(redis_url, ack["message_id"])
    assert await sync_to_async(finalize_answer)(result_for(request, f"About {cid}.")) == "stored"
    return request


async def test_only_the_first_question_of_a_conversation_is_offered(
    client: Client, chat_cache, redis_url: str
) -> None:
    # given a conversation with two questions the model answered
    site = await sync_to_async(make_site)(sla_ms=10_000)
    await client.hello(site)
    await answered(client, redis_url, "Do you ship to Iceland by boat?", "q1")
    await answered(client, redis_url, "Do you wrap presents in newspaper?", "q2")
    # then only the first reached the cache's admission, with the client's address as visitor
    offered = chat_cache.list_generated(str(site.pk))
    assert [entry.question for entry in offered] == ["Do you ship to Iceland by boat?"]
    assert offered[0].visitors == 1
