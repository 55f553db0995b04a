"""Did-you-mean through the real processes (daphne, Redis, the CPU worker and the inference
worker running the offline model), with a real websocket client and Debian's Chromium."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis as redis_lib

from chatplatform.conversations.models import Message
from chatplatform.faq.models import FAQ
from chatplatform.suggestions.models import SuggestionOffer
from inference.contracts import answered_key
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


# The click must land while the model's answer is being generated. The worker is frozen
# (SIGSTOP) the moment its first text reaches the customer's socket; on a fast machine the
# whole answer may have been generated in between (it is short). That is seen in Redis before
# the click (the worker took the message's "answered" key), and the attempt is made again
# with a new question, so the test does not depend on the machine's speed.
RACE_ATTEMPTS = 3


def answer_concluded(platform, message_id: str) -> bool:
    """The worker already concluded this answer (its final event is sent or on its way)."""
    client = redis_lib.Redis.from_url(platform.env["REDIS_URL"])
    return bool(client.exists(answered_key(message_id)))


def click_while_the_model_streams(platform, site, shipping: FAQ) -> str | None:
    """One conversation: a vague question, its suggestions, a click while the model streams.
    Returns the question's id, or None when the model had finished before the worker froze."""
    with ws_connect(platform) as socket:
        ws_send(socket, {"type": "hello", "v": 1, "site_key": site.widget_key})
        ws_receive_type(socket, "welcome", timeout=30)
        # when a vague question misses: suggestions, and the model starts streaming
        ws_send(socket, {"type": "message", "client_message_id": "c1", "text": VAGUE_QUESTION})
        mid = ws_receive_type(socket, "ack", timeout=30)["message_id"]
        suggestions = ws_receive_type(socket, "suggestions", timeout=30)
        assert suggestions["suggestions"][0]["faq_id"] == shipping.pk
        ws_receive_type(socket, "answer.delta", timeout=MODEL_TIMEOUT_S)
        platform.pause("worker-inference")  # hold the worker mid-generation
        try:
            if answer_concluded(platform, mid):
                return None
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
    return mid


def test_a_click_stops_the_running_generation_and_answers_once(platform) -> None:
    # given a site with a generous SLA (no holding reply) and a few FAQs
    site = make_site(sla_ms=20_000)
    shipping = add_faqs(site)
    # when a customer clicks a suggestion while the model streams its answer
    for _ in range(RACE_ATTEMPTS):
        mid = click_while_the_model_streams(platform, site, shipping)
        if mid is not None:
            break
    else:
        pytest.fail(f"the model finished all {RACE_ATTEMPTS} answers before the worker froze")
    # then the model's row records the cut-short generation, the FAQ answer is stored once
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


class FreezeOnFirstText:
    """Watches the widget's websocket itself (not the page, which is slower to show it) and
    freezes the inference worker the moment the first streamed text of an answer arrives;
    keeps the id of the question the server acknowledged."""

    def __init__(self, platform) -> None:
        self.platform = platform
        self.question_id: str | None = None
        self.frozen = False

    def attach(self, page) -> None:
        page.on("websocket", lambda socket: socket.on("framereceived", self._on_frame))

    def _on_frame(self, payload: str | bytes) -> None:
        frame = json.loads(payload)
        if frame.get("type") == "ack" and self.question_id is None:
            self.question_id = frame["message_id"]
        elif frame.get("type") == "answer.delta" and not self.frozen:
            self.platform.pause("worker-inference")
            self.frozen = True

    def wait(self, page) -> None:
        deadline = time.monotonic() + MODEL_TIMEOUT_S
        while not self.frozen:
            assert time.monotonic() < deadline, "the model's answer never started to stream"
            page.wait_for_timeout(10)  # lets Playwright deliver the socket's events

    def release(self) -> None:
        if self.frozen:
            self.platform.resume("worker-inference")


def open_widget(platform, browser, watcher: FreezeOnFirstText | None = None):
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    page = context.new_page()
    if watcher is not None:
        watcher.attach(page)
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


def click_chip_while_the_model_streams(platform, page, watcher: FreezeOnFirstText) -> bool:
    """Ask a vague question, click its shipping chip while the model's answer is frozen
    mid-stream. False when the model had finished before the worker froze (see
    RACE_ATTEMPTS)."""
    # given a missed question: "Related answers" chips under it, the model streaming
    ask(page, VAGUE_QUESTION)
    page.get_by_role("group", name="Related answers").wait_for()
    chip = chips(page).filter(has_text="How long does shipping take?")
    chip.wait_for()
    assert chips(page).last.text_content() == "None of these"
    try:
        watcher.wait(page)
        page.locator("#cs-chat-widget .msg.assistant").nth(1).wait_for()  # the streamed text
        assert watcher.question_id is not None
        if answer_concluded(platform, watcher.question_id):
            return False
        # when the customer clicks the chip
        chip.click()
        # then the FAQ answer shows
        page.locator("#cs-chat-widget .msg.assistant .text", has_text=SHIPPING_ANSWER).wait_for()
    finally:
        watcher.release()
    assert chip.get_attribute("aria-pressed") == "true" and chip.is_disabled()
    return True


@pytest.mark.browser
def test_widget_chips_answer_in_one_click_and_stop_the_stream(
    platform, browser, demo_site_with_faqs
) -> None:
    for _ in range(RACE_ATTEMPTS):
        watcher = FreezeOnFirstText(platform)
        context, page = open_widget(platform, browser, watcher)
        if click_chip_while_the_model_streams(platform, page, watcher):
            break
        context.close()
    else:
        pytest.fail(f"the model finished all {RACE_ATTEMPTS} answers before the worker froze")
    try:
        # and the model's stream stops: its row is cut short, its bubble stops growing
        question_id = watcher.question_id
        eventually(
            lambda: Message.objects.filter(
                in_reply_to_id=question_id, source="llm", state="failed"
            ).exists(),
            "the generation to be cancelled",
        )
        streamed = page.locator("#cs-chat-widget .msg.assistant").nth(1)
        streamed.locator(".meta").wait_for()  # closed by the cut-short answer.end
        before = streamed.locator(".text").text_content()
        time.sleep(1.0)
        assert streamed.locator(".text").text_content() == before
        assert not Message.objects.filter(in_reply_to_id=question_id, state="done", source="llm")
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
    context, page = open_widget(platform, browser)
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
        # given a second vague question, waiting for the customer too
        ask(page, "my parcel has not come")
        none_of_these = page.locator("#cs-chat-widget .chips").last.get_by_role(
            "button", name="None of these"
        )
        none_of_these.wait_for()
        second = eventually(
            lambda: Message.objects.filter(role="customer", text="my parcel has not come").first(),
            "the second question",
        )
        assert not Message.objects.filter(in_reply_to=second).exists()
        # when the customer says none of these
        none_of_these.click()
        # then the model answers it (streamed into a new bubble), and the chips are closed
        page.locator("#cs-chat-widget .msg.assistant").nth(2).wait_for(
            timeout=MODEL_TIMEOUT_S * 1000
        )
        assert none_of_these.get_attribute("aria-pressed") == "true"
        assert none_of_these.is_disabled()
        eventually(
            lambda: Message.objects.filter(in_reply_to=second, source="llm").exists(),
            "the model's answer to the declined question",
        )
        assert SuggestionOffer.objects.get(question=second).outcome == "declined"
    finally:
        context.close()
