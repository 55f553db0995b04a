"""Did-you-mean through the consumer, with the real cache, Redis and channel layer: suggestions
after a miss, one click answering from the FAQ (and stopping the model), the site's policy,
resuming, and every bad `choose_suggestion` / `decline_suggestions`.

The inference worker is played by the test, as in test_consumer_answers.py; the real worker
and browser run in test_suggestions_end_to_end.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis as redis_lib
from asgiref.sync import sync_to_async

from chatplatform.conversations.models import Message
from chatplatform.faq.models import FAQ
from chatplatform.suggestions.models import SuggestionOffer
from chatplatform.tenants.models import Site
from inference.contracts import cancel_key
from tests.chat.conftest import ORIGIN, Client, queued_inference_requests
from tests.chat.test_consumer_answers import ask, open_chat, result_for, worker_events

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]

SHOP_FAQS = [
    ("How long does shipping take?", ["When will my order arrive?"], "3-5 business days."),
    ("How do I return an item?", ["Can I send something back?"], "Within 30 days, free."),
    ("Which payment methods do you accept?", ["Can I pay by card?"], "Cards and PayPal."),
    ("How do I reset my password?", ["I forgot my password"], "Use 'Forgot password'."),
]
# Misses the cache (too vague for an automatic answer) but is near the shipping FAQ.
VAGUE_QUESTION = "my package is late"


def _make_site(policy: str, name: str) -> tuple[Site, list[FAQ]]:
    site = Site.objects.create(
        name=name, allowed_origins=[ORIGIN], sla_ms=5000, suggestion_policy=policy
    )
    faqs = []
    for question, variants, answer in SHOP_FAQS:
        faq = FAQ.objects.create(site=site, question=question, answer=answer)
        for text in variants:
            faq.variants.create(text=text)
        faqs.append(faq)
    return site, faqs


async def shop(policy: str = "model_with_suggestions", name: str = "Shop") -> tuple[Site, list]:
    return await sync_to_async(_make_site)(policy, name)


async def offer_of(question_id: str) -> SuggestionOffer:
    return await sync_to_async(SuggestionOffer.objects.get)(question_id=question_id)


async def rows_answering(question_id: str) -> list[tuple[str, str]]:
    return await sync_to_async(list)(
        Message.objects.filter(in_reply_to_id=question_id)
        .order_by("source")
        .values_list("source", "state")
    )


def requested(redis_url: str, message_id: str) -> bool:
    return any(r["message_id"] == message_id for r in queued_inference_requests(redis_url))


async def ask_vague(client: Client, cid: str = "c1") -> tuple[dict[str, Any], dict[str, Any]]:
    ack = await ask(client, VAGUE_QUESTION, cid)
    suggestions = await client.receive_type("suggestions")
    assert suggestions["reply_to"] == ack["message_id"]
    return ack, suggestions


async def test_a_miss_shows_suggestions_while_the_model_answers(
    client: Client, chat_cache, redis_url: str
) -> None:
    # given a site with the default policy
    site, faqs = await shop()
    await client.hello(site)
    # when a vague question misses the cache
    ack, frame = await ask_vague(client)
    # then its FAQs are suggested (faq_id, question), the shipping one first, and the model
    # is asked meanwhile
    assert frame["suggestions"][0] == {"faq_id": faqs[0].pk, "question": faqs[0].question}
    assert frame["client_message_id"] == "c1" and frame["waiting"] is False
    assert requested(redis_url, ack["message_id"])
    offer = await offer_of(ack["message_id"])
    assert offer.outcome == "shown" and offer.shown_faq_ids()[0] == faqs[0].pk


async def test_one_click_answers_from_the_faq_and_stops_the_model(
    client: Client, chat_cache, redis_url: str
) -> None:
    # given a question whose model answer has started streaming, with suggestions shown
    site, faqs = await shop()
    welcome = await client.hello(site)
    ack, _ = await ask_vague(client)
    mid = ack["message_id"]
    request = next(r for r in queued_inference_requests(redis_url) if r["message_id"] == mid)
    await worker_events(
        welcome["conversation_id"],
        {"type": "answer.start", "message_id": mid},
        {"type": "answer.delta", "message_id": mid, "text": "Your parcel"},
    )
    assert (await client.receive_type("answer.delta"))["text"] == "Your parcel"
    # when the customer clicks the shipping FAQ (edited since it was suggested)
    await sync_to_async(FAQ.objects.filter(pk=faqs[0].pk).update)(answer="2-3 business days.")
    await client.send({"type": "choose_suggestion", "message_id": mid, "faq_id": faqs[0].pk})
    answer = await client.receive_type("answer")
    # then the FAQ's current answer comes at once, stored as an FAQ answer to the question
    assert answer["source"] == "faq" and answer["reply_to"] == mid
    assert answer["text"] == "2-3 business days."
    stored = await sync_to_async(Message.objects.get)(pk=answer["message_id"])
    assert stored.source == "faq" and stored.faq_id == faqs[0].pk and stored.delivered
    # and the model's generation for it is asked to stop (the worker polls this key)
    client_redis = redis_lib.Redis.from_url(redis_url)
    assert client_redis.exists(cancel_key(mid))
    offer = await offer_of(mid)
    assert offer.outcome == "chosen" and offer.chosen_faq_id == faqs[0].pk
    assert offer.model_cancelled
    # when the worker stops and reports the cut-short generation
    cut = result_for(request, "Your parcel")
    cut["finish_reason"] = "cancelled"
    await worker_events(
        welcome["conversation_id"],
        {"type": "answer.end", "message_id": mid, "result": cut},
    )
    end = await client.receive_type("answer.end")
    # then the text already shown is closed as cut short, and no failure is reported
    assert end["finish_reason"] == "cancelled" and end["text"] == "Your parcel"
    await client.assert_usable()


async def test_suggest_first_waits_for_the_customer(
    client: Client, chat_cache, redis_url: str
) -> None:
    # given a suggest_first site
    site, faqs = await shop("suggest_first")
    await client.hello(site)
    # when a vague question misses
    ack, frame = await ask_vague(client)
    mid = ack["message_id"]
    # then the suggestions wait for the customer: no model request, no model answer row
    assert frame["waiting"] is True
    assert not requested(redis_url, mid)
    assert await rows_answering(mid) == []
    # when the customer says "none of these"
    await client.send({"type": "decline_suggestions", "message_id": mid})
    declined = await client.receive_type("suggestions.declined")
    # then the model is asked now
    assert declined["reply_to"] == mid
    assert requested(redis_url, mid)
    assert await rows_answering(mid) == [("llm", "pending")]
    assert (await offer_of(mid)).outcome == "declined"


async def test_suggest_first_a_new_message_goes_to_the_model(
    client: Client, chat_cache, redis_url: str
) -> None:
    # given a question waiting for a choice
    site, _ = await shop("suggest_first")
    await client.hello(site)
    first, _ = await ask_vague(client, "c1")
    # when the customer types again instead of choosing
    second, again = await ask_vague(client, "c2")
    # then the new message goes to the model (suggestions shown beside it), the first is
    # passed over
    assert again["waiting"] is False
    assert requested(redis_url, second["message_id"])
    assert not requested(redis_url, first["message_id"])
    assert (await offer_of(first["message_id"])).outcome == "passed_over"


async def test_model_only_shows_no_suggestions(client: Client, chat_cache, redis_url: str) -> None:
    site, _ = await shop("model_only")
    await client.hello(site)
    ack = await ask(client, VAGUE_QUESTION)
    assert requested(redis_url, ack["message_id"])
    await client.send({"type": "ping"})
    assert (await client.receive())["type"] == "pong"  # no suggestions frame came before it
    assert not await sync_to_async(
        SuggestionOffer.objects.filter(question_id=ack["message_id"]).exists
    )()


async def test_a_follow_up_gets_no_suggestions(client: Client, chat_cache) -> None:
    # given a conversation about shipping
    site, _ = await shop()
    await client.hello(site)
    await ask(client, "How long does shipping take?", "c1")
    await client.receive_type("answer")
    # when a follow-up (the cache is bypassed: it depends on the conversation) is asked
    await ask(client, "and what about it?", "c2")
    # then no suggestions are shown for it
    await client.send({"type": "ping"})
    assert (await client.receive())["type"] == "pong"


async def test_a_returning_customer_sees_waiting_suggestions_and_the_chosen_answer(
    chat_cache, redis_url: str
) -> None:
    # given a waiting question, then the customer leaves
    site, faqs = await shop("suggest_first")
    first, welcome = await open_chat(site)
    ack, _ = await ask_vague(first)
    await first.close()
    # when they come back
    second, _ = await open_chat(site, welcome["conversation_id"])
    frame = await second.receive_type("suggestions")
    # then the suggestions are there again, still waiting; a click answers
    assert frame["reply_to"] == ack["message_id"] and frame["waiting"] is True
    await second.send(
        {"type": "choose_suggestion", "message_id": ack["message_id"], "faq_id": faqs[0].pk}
    )
    answer = await second.receive_type("answer")
    assert answer["text"] == "3-5 business days."
    await second.close()
    # and a later return shows no stale suggestions and no failure for the question
    third, _ = await open_chat(site, welcome["conversation_id"])
    await third.send({"type": "ping"})
    assert (await third.receive())["type"] == "pong"
    await third.close()


# --- bad input: a documented error, and nothing changes -----------------------------------


async def assert_unchanged(mid: str) -> None:
    offer = await offer_of(mid)
    assert offer.outcome == "shown" and offer.chosen_faq_id is None
    assert ("faq", "done") not in await rows_answering(mid)


async def test_choose_before_hello_is_refused(client: Client) -> None:
    frame = {
        "type": "choose_suggestion",
        "message_id": "00000000-0000-0000-0000-000000000001",
        "faq_id": 1,
    }
    await client.send(frame)
    error = await client.receive()
    assert error["type"] == "error" and error["code"] == "hello_required"


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "choose_suggestion", "message_id": "nope", "faq_id": 1},
        {"type": "choose_suggestion", "faq_id": 1},
        {"type": "choose_suggestion", "message_id": "00000000-0000-0000-0000-000000000001"},
        {"type": "choose_suggestion", "message_id": "00000000-0000-0000-0000-000000000001",
         "faq_id": "1"},
        {"type": "choose_suggestion", "message_id": "00000000-0000-0000-0000-000000000001",
         "faq_id": True},
        {"type": "choose_suggestion", "message_id": "00000000-0000-0000-0000-000000000001",
         "faq_id": -3},
        {"type": "decline_suggestions", "message_id": 7},
    ],
)  # fmt: skip
async def test_malformed_frames_are_bad_field(
    client: Client, chat_cache, frame: dict[str, Any]
) -> None:
    site, _ = await shop()
    await client.hello(site)
    await client.send(frame)
    error = await client.receive()
    assert error["type"] == "error" and error["code"] == "bad_field"
    await client.assert_usable()


async def test_a_faq_not_suggested_to_that_message_is_refused(
    client: Client, chat_cache, redis_url: str
) -> None:
    # given suggestions for a vague question, and an FAQ of the site not among them
    site, faqs = await shop()
    await client.hello(site)
    ack, frame = await ask_vague(client)
    mid = ack["message_id"]
    shown = {s["faq_id"] for s in frame["suggestions"]}
    other = next(f for f in faqs if f.pk not in shown)
    # when the customer claims it anyway
    await client.send({"type": "choose_suggestion", "message_id": mid, "faq_id": other.pk})
    error = await client.receive_type("error")
    # then it is refused and nothing changed
    assert error["code"] == "not_suggested"
    await assert_unchanged(mid)
    assert not redis_lib.Redis.from_url(redis_url).exists(cancel_key(mid))


async def test_another_sites_faq_is_refused(client: Client, chat_cache) -> None:
    # given a second site with the same FAQs (other ids)
    site, _ = await shop(name="Shop A")
    _, other_faqs = await shop(name="Shop B")
    await client.hello(site)
    ack, _ = await ask_vague(client)
    # when the customer names the other site's shipping FAQ
    await client.send(
        {"type": "choose_suggestion", "message_id": ack["message_id"], "faq_id": other_faqs[0].pk}
    )
    # then it is refused
    assert (await client.receive_type("error"))["code"] == "not_suggested"
    await assert_unchanged(ack["message_id"])


async def test_another_conversations_question_is_refused(chat_cache) -> None:
    # given a question with suggestions in one conversation
    site, faqs = await shop()
    first, _ = await open_chat(site)
    ack, _ = await ask_vague(first)
    # when another conversation's socket chooses for it
    second, _ = await open_chat(site)
    await second.send(
        {"type": "choose_suggestion", "message_id": ack["message_id"], "faq_id": faqs[0].pk}
    )
    # then it is an unknown message there, and nothing changed
    assert (await second.receive_type("error"))["code"] == "unknown_message"
    await assert_unchanged(ack["message_id"])
    await first.close()
    await second.close()


async def test_a_faq_deleted_since_is_refused(client: Client, chat_cache) -> None:
    site, faqs = await shop()
    await client.hello(site)
    ack, _ = await ask_vague(client)
    await sync_to_async(FAQ.objects.filter(pk=faqs[0].pk).update)(is_active=False)
    await client.send(
        {"type": "choose_suggestion", "message_id": ack["message_id"], "faq_id": faqs[0].pk}
    )
    assert (await client.receive_type("error"))["code"] == "suggestion_gone"
    await assert_unchanged(ack["message_id"])
    await sync_to_async(FAQ.objects.filter(pk=faqs[0].pk).delete)()
    await client.send(
        {"type": "choose_suggestion", "message_id": ack["message_id"], "faq_id": faqs[0].pk}
    )
    assert (await client.receive_type("error"))["code"] == "suggestion_gone"
    await assert_unchanged(ack["message_id"])


async def test_a_repeated_choice_is_refused_and_answers_once(client: Client, chat_cache) -> None:
    # given a question answered by a click
    site, faqs = await shop()
    await client.hello(site)
    ack, frame = await ask_vague(client)
    mid = ack["message_id"]
    await client.send({"type": "choose_suggestion", "message_id": mid, "faq_id": faqs[0].pk})
    await client.receive_type("answer")
    # when the click comes again (the same FAQ, or another suggested one), or "none of these"
    second = frame["suggestions"][-1]["faq_id"]
    for again in (faqs[0].pk, second):
        await client.send({"type": "choose_suggestion", "message_id": mid, "faq_id": again})
        assert (await client.receive_type("error"))["code"] == "already_chosen"
    await client.send({"type": "decline_suggestions", "message_id": mid})
    assert (await client.receive_type("error"))["code"] == "already_chosen"
    # then there is still one FAQ answer, the first choice
    rows = await rows_answering(mid)
    assert rows.count(("faq", "done")) == 1
    assert (await offer_of(mid)).chosen_faq_id == faqs[0].pk


async def test_declining_twice_is_refused(client: Client, chat_cache) -> None:
    site, _ = await shop()
    await client.hello(site)
    ack, _ = await ask_vague(client)
    await client.send({"type": "decline_suggestions", "message_id": ack["message_id"]})
    await client.receive_type("suggestions.declined")
    await client.send({"type": "decline_suggestions", "message_id": ack["message_id"]})
    assert (await client.receive_type("error"))["code"] == "already_declined"


async def test_choosing_for_a_message_without_suggestions_is_refused(
    client: Client, chat_cache
) -> None:
    # given an FAQ hit (no suggestions)
    site, faqs = await shop()
    await client.hello(site)
    ack = await ask(client, "How long does shipping take?")
    await client.receive_type("answer")
    await client.send(
        {"type": "choose_suggestion", "message_id": ack["message_id"], "faq_id": faqs[0].pk}
    )
    assert (await client.receive_type("error"))["code"] == "unknown_message"
