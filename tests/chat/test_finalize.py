"""The finalize task's offer to the cache: only a conversation's first question, and who asked
by evidence the server trusts (a visitor the site vouched for, else the client's network; never
the widget's self-chosen id). Admission is driven here directly: under `make run` the offline
model always stops at the length limit, and only answers that stopped naturally are offered.
Real database, Redis and cache; the questions are stored as the consumer stores them, without a
socket (so no worker can take the task first)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chatplatform.chat import store
from chatplatform.chat.tasks import finalize_answer
from chatplatform.semanticcache.service import get_cache
from inference.contracts import InferenceResult
from tests.chat.conftest import make_site

pytestmark = pytest.mark.django_db(transaction=True)


def ask_and_answer(
    site_id: int,
    conversation_id: str,
    question: str,
    at: datetime,
    grounding: list[str] | None = None,
) -> str:
    """Store a question as the consumer does, then finalize the model's answer to it."""
    [(message_id, created)] = store.save_questions(
        [
            store.NewQuestion(
                site_id=site_id,
                conversation_id=conversation_id,
                client_message_id=f"c-{at.timestamp()}",
                text=question,
                received_at=at,
                cached=None,
                sla_ms=300,
            )
        ]
    )
    assert created
    return finalize_answer(model_answer(site_id, conversation_id, message_id, question, grounding))


def model_answer(
    site_id: int,
    conversation_id: str,
    message_id: str,
    question: str,
    grounding: list[str] | None = None,
) -> dict:
    """The finalize payload of the model's answer to a question."""
    result = InferenceResult(
        conversation_id=conversation_id,
        message_id=message_id,
        site_id=str(site_id),
        text=f"The answer to: {question}",
        finish_reason="stop",
        prompt_tokens=40,
        completion_tokens=7,
        ttft_ms=120.0,
        total_ms=320.0,
        gpu_seconds=0.2,
        grounding=grounding or [],
    )
    return result.to_dict()


@pytest.mark.parametrize(("visitor_id", "client_ip"), [("v_123", "203.0.113.7"), ("", "::1")])
def test_only_the_first_question_of_a_conversation_is_offered(
    chat_cache, visitor_id: str, client_ip: str
) -> None:
    # given a conversation with two questions the model answered
    site = make_site()
    conversation_id, _ = store.open_conversation(site.pk, None, visitor_id, client_ip)
    now = datetime.now(tz=UTC)
    assert ask_and_answer(site.pk, conversation_id, "Do you ship to Iceland by boat?", now)
    second = now + timedelta(seconds=5)
    assert ask_and_answer(site.pk, conversation_id, "Do you wrap presents in newspaper?", second)
    # then only the first reached the cache's admission, as one visitor
    offered = chat_cache.list_generated(str(site.pk))
    assert [entry.question for entry in offered] == ["Do you ship to Iceland by boat?"]
    assert offered[0].visitors == 1


def offer_from(site, askers: list[tuple[str, bool, str]], question: str) -> list:
    """The same first question from one conversation per (visitor_id, vouched, address)."""
    now = datetime.now(tz=UTC)
    for index, (visitor_id, vouched, client_ip) in enumerate(askers):
        conversation_id, _ = store.open_conversation(
            site.pk, None, visitor_id, client_ip, visitor_verified=vouched
        )
        ask_and_answer(site.pk, conversation_id, question, now + timedelta(seconds=index))
    return [e for e in get_cache().list_generated(str(site.pk)) if e.question == question]


def test_invented_visitor_ids_from_one_address_are_one_visitor(chat_cache) -> None:
    # given three "visitors" whose ids the client made up, all from one address
    site = make_site()
    askers = [(f"v_invented_{n}", False, "203.0.113.7") for n in range(3)]
    # when each gets the model's answer to the same first question
    [entry] = offer_from(site, askers, "Do you ship to Iceland by boat?")
    # then admission counted one visitor, and nothing is served to the next customer
    assert entry.visitors == 1 and entry.state == "pending"


def test_distinct_addresses_and_vouched_visitors_count(chat_cache) -> None:
    # given the admission threshold of the shipped configuration
    needed = chat_cache.config.admission_min_visitors
    assert needed >= 2
    site = make_site()
    # when distinct networks ask (an IPv6 /64 is one customer's: one visitor)
    networks = [
        ("v_a", False, "2001:db8:1:1::10"),
        ("v_b", False, "2001:db8:1:1::99"),  # same /64
        *[("", False, f"198.51.100.{n}") for n in range(1, needed)],
    ]
    [entry] = offer_from(site, networks, "Do you ship to Iceland by boat?")
    # then each network counted once, enough to admit the answer
    assert entry.visitors >= needed and entry.state == "active"
    # and visitors the site vouched for count one each, even behind one office address
    vouched = [(f"customer-{n}", True, "203.0.113.7") for n in range(needed)]
    [other] = offer_from(site, vouched, "Do you wrap presents in newspaper?")
    assert other.visitors == needed and other.state == "active"


def test_the_offer_records_the_faq_versions_the_model_was_shown(chat_cache) -> None:
    import time

    from chatplatform.faq.models import FAQ

    # given a first question answered by the model with the site's FAQ in its prompt
    site = make_site()
    faq = FAQ.objects.get(site=site)
    conversation_id, _ = store.open_conversation(site.pk, None, "v_1", "203.0.113.7")
    grounding = [f"{faq.pk}:{faq.version}"]
    question = "Do you ship to Iceland by boat?"
    assert ask_and_answer(site.pk, conversation_id, question, datetime.now(tz=UTC), grounding)
    [offered] = chat_cache.list_generated(str(site.pk))
    assert chat_cache.get_entry(offered.entry_id).grounding == grounding
    # when an admin changes that FAQ's answer
    faq.answer = "Standard shipping now takes 1-2 business days."
    faq.save()
    # then the answer written from the old one is dropped
    deadline = time.monotonic() + 3
    while chat_cache.list_generated(str(site.pk)):
        assert time.monotonic() < deadline, "the grounded answer was not dropped"
        time.sleep(0.02)
    # and a late answer written from the old version is refused
    other, _ = store.open_conversation(site.pk, None, "v_2", "203.0.113.8")
    assert ask_and_answer(site.pk, other, question, datetime.now(tz=UTC), grounding)
    assert chat_cache.list_generated(str(site.pk)) == []


def test_a_second_finalize_of_a_stored_answer_changes_nothing(chat_cache) -> None:
    from chatplatform.chat.store import reply_id_for
    from chatplatform.conversations.models import Message

    # given an answer finalized once (a worker that died after queuing its finalize leaves the
    # redelivered copy to queue it again: inference/service.py)
    site = make_site(sla_ms=300)
    at = datetime.now(UTC) - timedelta(seconds=5)
    conversation_id, _ = store.open_conversation(site.pk, None, "v_1", "203.0.113.7")
    assert ask_and_answer(site.id, conversation_id, "Where is my parcel?", at) == "stored"
    question = Message.objects.get(conversation_id=conversation_id, in_reply_to=None)
    reply = Message.objects.get(pk=reply_id_for(str(question.pk)))
    # when the same result is finalized again
    again_payload = model_answer(site.id, conversation_id, str(question.pk), "Where is my parcel?")
    # then it is a duplicate and the stored row is as it was
    assert finalize_answer(again_payload) == "duplicate"
    again = Message.objects.get(pk=reply.pk)
    assert (again.state, again.text, again.completed_at) == (
        reply.state,
        reply.text,
        reply.completed_at,
    )
