"""The widget in Debian's Chromium (driven by Playwright, no browser download) on the demo
shop page served by the real platform (daphne, Redis, CPU and inference workers)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from chatplatform.conversations.models import Message
from tests.browser import chromium
from tests.chat.conftest import make_site

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.slow]

ANSWER_TIMEOUT_MS = 60_000  # a model answer on a shared 2-core box
SCREENSHOT = Path(settings.VAR_DIR) / "widget.png"  # copied to docs/widget.png by hand


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium() as launched:
        yield launched


@pytest.fixture
def shop(platform, browser):
    """The demo page with the widget open, for a site that allows the platform's origin."""
    site = make_site(sla_ms=20_000, name="Northwind Outfitters (demo shop)")
    site.allowed_origins = [platform.base_url]
    site.save()
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    page = context.new_page()
    page.goto(platform.base_url + "/")
    page.locator("#cs-chat-widget .launcher").click()
    page.locator("#cs-chat-widget .msg.assistant").first.wait_for()  # the greeting
    yield page, site
    context.close()


def eventually(predicate, what: str, timeout_s: float = 15.0):
    """The predicate's first truthy value (the server records deliveries after sending)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def ask(page, text: str) -> None:
    page.locator("#cs-chat-widget textarea").fill(text)
    page.locator("#cs-chat-widget textarea").press("Enter")


def answers(page):
    return page.locator("#cs-chat-widget .msg.assistant")


def wait_for_answers(page, count: int, timeout_ms: int = ANSWER_TIMEOUT_MS) -> None:
    """Until `count` assistant bubbles (greeting included) have finished (feedback bar shown)."""
    page.wait_for_function(
        """(n) => document.querySelector('#cs-chat-widget').shadowRoot
             .querySelectorAll('.msg.assistant .meta').length >= n""",
        arg=count - 1,  # the greeting has no feedback bar
        timeout=timeout_ms,
    )


def test_faq_question_is_answered_from_the_cache(shop) -> None:
    page, _ = shop
    ask(page, "How long does shipping take?")
    wait_for_answers(page, 2)
    assert answers(page).nth(1).locator(".text").text_content() == (
        "Standard shipping takes 3-5 business days."
    )
    page.screenshot(path=str(SCREENSHOT))


def test_novel_question_is_streamed_from_the_model(shop) -> None:
    page, _ = shop
    ask(page, "Do you repair old climbing ropes?")
    # the answer bubble appears while streaming (no feedback bar yet) and is then completed
    wait_for_answers(page, 2)
    text = answers(page).nth(1).locator(".text").text_content()
    reply = eventually(
        lambda: Message.objects.filter(source="llm", delivered=True, state="done").first(),
        "the streamed answer to be stored and marked delivered",
    )
    assert text and text == reply.text


def test_script_injection_is_shown_as_text(shop) -> None:
    page, _ = shop
    attack = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    ask(page, attack)
    customer = page.locator("#cs-chat-widget .msg.customer").first
    customer.wait_for()
    assert customer.text_content() == attack
    assert page.locator("#cs-chat-widget .msg img, #cs-chat-widget .msg script").count() == 0
    time.sleep(0.5)  # give an injected handler every chance to run
    assert page.evaluate("window.__pwned") is None


def test_feedback_click_is_recorded(shop) -> None:
    page, _ = shop
    ask(page, "How long does shipping take?")
    wait_for_answers(page, 2)
    answers(page).nth(1).get_by_role("button", name="Helpful", exact=True).click()
    eventually(lambda: Message.objects.filter(source="faq", feedback=1).exists(), "the feedback")


def test_reconnect_and_resume_after_the_server_drops_the_socket(shop, platform) -> None:
    page, _ = shop
    # given a question acked (stored) but held back from the model
    platform.pause("worker-inference")
    try:
        ask(page, "Can I rent a tent for the weekend?")
        page.wait_for_function(
            "() => !JSON.parse(localStorage.getItem(Object.keys(localStorage)[0])).outbox.length"
        )
        # when the web server dies (every socket drops) while the answer is being made
        platform.kill_web()
        page.locator("#cs-chat-widget .status").wait_for(state="visible")  # "Reconnecting..."
    finally:
        platform.resume("worker-inference")
    platform.start_web()
    platform.wait_healthy()
    # then the widget reconnects, resumes the conversation and shows the answer (a restarted
    # server reloads its cache and the widget's backoff may have grown to 15 s: allow more)
    wait_for_answers(page, 2, timeout_ms=2 * ANSWER_TIMEOUT_MS)
    reply = eventually(
        lambda: Message.objects.filter(source="llm", delivered=True, state="done").first(),
        "the resumed answer to be marked delivered",
    )
    assert answers(page).nth(1).locator(".text").text_content() == reply.text
