"""Did-you-mean through the real processes (daphne, Redis, the CPU worker and the inference
worker running the offline model), with a real websocket client and Debian's Chromium."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from chatplatform.conversations.models import Message
from chatplatform.faq.models import FAQ
from chatplatform.suggestions.models import SuggestionOffer
from tests.browser import chromium
from tests.chat.conftest import make_site, ws_connect, ws_receive_type, ws_send
from tests.chat.test_widget_browser import ask, eventually

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

MODEL_TIMEOUT_S = 60  # the first tokens of a fresh worker on a loaded 2-core box
VAGUE_QUESTION = "my package is late"  # misses the cache, near the shipping FAQ
MORE_FAQS = [
    ("How do I return an item?", "Within 30 days, free."),
    ("Which payment methods do you accept?", "Cards and PayPal."),
    ("How do I reset my password?", "Use 'Forgot password'."),
]
SHIPPING_ANSWER = "Standard shipping takes 3-5 business days."


def add_faqs(site) -> FAQ:
    """The site's shipping FAQ (make_site's), after adding FAQs to compete with it."""
    with_commit = [FAQ.objects.create(site=site, question=q, answer=a) for q, a in MORE_FAQS]
    assert with_commit
    return FAQ.objects.get(site=site, question="How long does shipping take?")


def test_a_click_stops_the_running_generation_and_answers_once(platform) -> None:
    # given a site with a generous SLA (no holding reply) and a few FAQs
    site = make_site(sla_ms=20_000)
    shipping = add_faqs(site)
    with ws_connect(platform) as socket:
        ws_send(socket, {"type": "hello", "v": 1, "site_key": site.widget_key})
        ws_receive_type(socket, "welcome", timeout=30)
        # when a vague question misses: suggestions, and the model starts streaming
        ws_send(socket, {"type": "message", "client_message_id": "c1", "text": VAGUE_QUESTION})
        mid = ws_receive_type(socket, "ack", timeout=30)["message_id"]
        suggestions = ws_receive_type(socket, "suggestions", timeout=30)
        assert suggestions["suggestions"][0]["faq_id"] == shipping.pk
        ws_receive_type(socket, "answer.delta", timeout=MODEL_TIMEOUT_S)
        # hold the worker mid-generation, so the click lands while the answer is running
        platform.pause("worker-inference")
        try:
            ws_send(socket, {"type": "choose_suggestion", "message_id": mid, "faq_id": shipping.pk})
            answer = ws_receive_type(socket, "answer", timeout=30)
        finally:
            platform.resume("worker-inference")
        # then the FAQ's answer came at once
        assert answer["source"] == "faq" and answer["text"] == SHIPPING_ANSWER
        # and the worker stops the generation at its next step: the stream is closed as cut
        # short, with nothing after it for that question
        end = ws_receive_type(socket, "answer.end", timeout=30)
        assert end["reply_to"] == mid and end["finish_reason"] == "cancelled"
        frames = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                frames.append(json.loads(socket.recv(timeout=0.2)))
            except TimeoutError:
                continue
        assert [f for f in frames if f.get("reply_to") == mid] == []
        # and the worker's slot is free: the next question is answered by the model
        ws_send(socket, {"type": "message", "client_message_id": "c2", "text": "Can my dog come?"})
        ws_receive_type(socket, "answer.end", timeout=MODEL_TIMEOUT_S)
    # the model's row records the cut-short generation, the FAQ answer is stored exactly once
    model = eventually(
        lambda: Message.objects.filter(in_reply_to_id=mid, source="llm", state="failed").first(),
        "the finalize task to store the cancelled generation",
    )
    assert model.delivered and model.completion_tokens < 96
    assert Message.objects.filter(in_reply_to_id=mid, source="faq").count() == 1
    offer = SuggestionOffer.objects.get(question_id=mid)
    assert offer.outcome == "chosen" and offer.model_cancelled


# --- the widget in Chromium ------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium() as launched:
        yield launched


def open_widget(platform, browser, site):
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    page = context.new_page()
    page.goto(platform.base_url + "/")
    page.locator("#cs-chat-widget .launcher").click()
    page.locator("#cs-chat-widget .msg.assistant").first.wait_for()  # the greeting
    return context, page


@pytest.fixture
def demo_site_with_faqs(platform):
    site = make_site(sla_ms=20_000, name="Northwind Outfitters (demo shop)")
    site.allowed_origins = [platform.base_url]
    site.save()
    add_faqs(site)
    return site


def chips(page):
    return page.locator("#cs-chat-widget .chips button")


@pytest.mark.browser
def test_widget_chips_answer_in_one_click_and_stop_the_stream(
    platform, browser, demo_site_with_faqs
) -> None:
    context, page = open_widget(platform, browser, demo_site_with_faqs)
    try:
        # given a missed question: "Related answers" chips under it, the model streaming
        ask(page, VAGUE_QUESTION)
        page.get_by_role("group", name="Related answers").wait_for()
        chip = chips(page).filter(has_text="How long does shipping take?")
        chip.wait_for()
        assert chips(page).last.text_content() == "None of these"
        page.locator("#cs-chat-widget .msg.assistant").nth(1).wait_for(
            timeout=MODEL_TIMEOUT_S * 1000
        )  # the model's answer has started to stream
        platform.pause("worker-inference")
        try:
            # when the customer clicks the chip
            chip.click()
            # then the FAQ answer shows
            page.locator(
                "#cs-chat-widget .msg.assistant .text", has_text=SHIPPING_ANSWER
            ).wait_for()
        finally:
            platform.resume("worker-inference")
        assert chip.get_attribute("aria-pressed") == "true" and chip.is_disabled()
        # and the model's stream stops: its row is cut short, its bubble stops growing
        question = Message.objects.get(role="customer", text=VAGUE_QUESTION)
        eventually(
            lambda: Message.objects.filter(
                in_reply_to=question, source="llm", state="failed"
            ).exists(),
            "the generation to be cancelled",
        )
        streamed = page.locator("#cs-chat-widget .msg.assistant").nth(1)
        before = streamed.text_content()
        time.sleep(1.0)
        assert streamed.text_content() == before
        # when the page is reloaded
        page.reload()
        page.locator("#cs-chat-widget .msg.assistant .text", has_text=SHIPPING_ANSWER).wait_for()
        # then the chosen answer is in the history, and the chip still shows the choice
        reloaded = chips(page).filter(has_text="How long does shipping take?")
        assert reloaded.get_attribute("aria-pressed") == "true"
        page.screenshot(path=str(platform.log_dir / "suggestions.png"))
    finally:
        context.close()


@pytest.mark.browser
def test_widget_suggest_first_waits_for_the_click(platform, browser, demo_site_with_faqs) -> None:
    site = demo_site_with_faqs
    site.suggestion_policy = "suggest_first"
    site.save()
    context, page = open_widget(platform, browser, site)
    try:
        # given a missed question on a suggest_first site
        ask(page, VAGUE_QUESTION)
        chip = chips(page).filter(has_text="How long does shipping take?")
        chip.wait_for()
        # then nothing else comes: the model waits for the customer
        time.sleep(2.0)
        assert page.locator("#cs-chat-widget .msg.assistant").count() == 1  # the greeting
        question = Message.objects.get(role="customer", text=VAGUE_QUESTION)
        assert not Message.objects.filter(in_reply_to=question).exists()
        # when the customer clicks
        chip.click()
        # then the FAQ answers, and the model never ran
        page.locator("#cs-chat-widget .msg.assistant .text", has_text=SHIPPING_ANSWER).wait_for()
        assert not Message.objects.filter(in_reply_to=question, source="llm").exists()
    finally:
        context.close()
