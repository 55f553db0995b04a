"""A customer and an agent in Debian's Chromium (two browser contexts), on the real platform
(daphne, Redis, CPU and inference workers): hand-off, claim, two replies each way, a reload on
each side in the middle, hand back (the cache answers again), resolve, rating, and an agent's
reply saved as an FAQ in one click."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission

from chatplatform.agents.models import Handoff
from chatplatform.faq.models import FAQ
from tests.chat.agents_support import eventually, make_agent, session_cookie

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.slow]

WIDGET = "#cs-chat-widget"
TIMEOUT_MS = 20_000
INBOX_SCREENSHOT = Path(settings.VAR_DIR) / "inbox.png"  # copied to docs/inbox.png by hand
ATTACK = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'


def customer_says(page, text: str) -> None:  # noqa: ANN001 - a Playwright page
    page.locator(f"{WIDGET} textarea").fill(text)
    page.locator(f"{WIDGET} textarea").press("Enter")


def agent_says(page, text: str) -> None:  # noqa: ANN001
    page.locator("#reply").fill(text)
    page.locator("#reply").press("Enter")


def widget_texts(page, role: str) -> list[str]:  # noqa: ANN001
    return page.locator(f"{WIDGET} .msg.{role} .text").all_text_contents()


def inbox_texts(page, role: str) -> list[str]:  # noqa: ANN001
    return page.locator(f"#log .msg.{role} .text").all_text_contents()


def wait_text(locator, text: str) -> None:  # noqa: ANN001
    locator.filter(has_text=text).first.wait_for(timeout=TIMEOUT_MS)


def test_customer_and_agent_from_handoff_to_rating(platform, browser, demo_site) -> None:
    site = demo_site
    agent_user = make_agent("alice", [site], first_name="Alice")
    agent_user.user_permissions.add(
        *Permission.objects.filter(codename__in=["add_faq", "change_faq"])
    )
    customer_context = browser.new_context(viewport={"width": 1000, "height": 760})
    agent_context = browser.new_context(viewport={"width": 1200, "height": 800})
    agent_context.add_cookies(
        [{"name": "sessionid", "value": session_cookie(agent_user), "url": platform.base_url}]
    )
    try:
        customer = customer_context.new_page()
        customer.goto(platform.base_url + "/")
        customer.locator(f"{WIDGET} .launcher").click()
        customer.locator(f"{WIDGET} .msg.assistant").first.wait_for()
        agent = agent_context.new_page()
        agent.goto(platform.base_url + "/agents/")
        agent.locator("#connection").filter(has_text="Connected as Alice").wait_for()

        # hand-off: the customer asks for a person, the inbox shows it live with its badge
        human = customer.locator(f"{WIDGET} .human")
        human.click()
        wait_text(customer.locator(f"{WIDGET} .msg.info"), "has been asked to join")
        assert human.is_disabled() and human.text_content() == "A person was asked"
        agent.locator("#queue li").first.wait_for(timeout=TIMEOUT_MS)
        assert agent.locator("#badge").text_content() == "1"
        assert agent.title().startswith("(1) ")

        # claim
        agent.locator("#queue li").first.click()
        agent.wait_for_function("() => !document.getElementById('claim').disabled")
        agent.locator("#claim").click()
        wait_text(customer.locator(f"{WIDGET} .msg.info"), "Alice joined the chat.")
        assert human.is_disabled() and human.text_content() == "Talking to a person"
        agent.wait_for_function("() => !document.getElementById('reply').disabled")

        # replies each way (the bot stays silent while Alice holds the chat)
        agent_says(agent, "Hi, I am Alice. How can I help?")
        wait_text(customer.locator(f"{WIDGET} .msg.agent"), "How can I help?")
        assert customer.locator(f"{WIDGET} .msg.agent .who").first.text_content() == "Alice"
        customer_says(customer, "My parcel arrived broken")
        wait_text(agent.locator("#log .msg.customer"), "My parcel arrived broken")
        agent_says(agent, "Sorry to hear that! Which order is it?")
        wait_text(customer.locator(f"{WIDGET} .msg.agent"), "Which order is it?")
        customer_says(customer, "Order 1042")
        wait_text(agent.locator("#log .msg.customer"), "Order 1042")

        # both reload in the middle, and resume with the whole history
        agent.reload()
        wait_text(agent.locator("#log .msg.customer"), "Order 1042")
        assert inbox_texts(agent, "customer") == ["My parcel arrived broken", "Order 1042"]
        assert inbox_texts(agent, "agent") == [
            "Hi, I am Alice. How can I help?",
            "Sorry to hear that! Which order is it?",
        ]
        customer.reload()
        wait_text(customer.locator(f"{WIDGET} .msg.agent"), "Which order is it?")
        # (the history shows from the browser's storage at once; the hand-off state comes with
        # the server's welcome, a moment later)
        customer.locator(f"{WIDGET} .human:disabled", has_text="Talking to a person").wait_for(
            timeout=TIMEOUT_MS
        )
        assert human.text_content() == "Talking to a person"
        assert widget_texts(customer, "customer") == [
            "My parcel arrived broken",
            "Order 1042",
        ]
        agent.wait_for_function("() => !document.getElementById('reply').disabled")

        # second reply each way, after the reloads
        agent_says(agent, "A replacement for order 1042 ships today.")
        wait_text(customer.locator(f"{WIDGET} .msg.agent"), "ships today")
        customer_says(customer, "Thank you!")
        wait_text(agent.locator("#log .msg.customer"), "Thank you!")
        agent.screenshot(path=str(INBOX_SCREENSHOT))
        assert widget_texts(customer, "agent") == [
            "Hi, I am Alice. How can I help?",
            "Sorry to hear that! Which order is it?",
            "A replacement for order 1042 ships today.",
        ]
        bot_answers = widget_texts(customer, "assistant")
        assert len(bot_answers) == 1  # the greeting: the bot stayed silent

        # one click: the agent's reply to the customer's question becomes an FAQ
        reply = agent.locator("#log .msg.agent").last
        reply.locator("summary").click()
        reply.locator(".new-faq").click()
        wait_text(reply.locator(".faq-result"), "Saved: FAQ")
        assert FAQ.objects.filter(
            site=site, question="Order 1042",
            answer="A replacement for order 1042 ships today.",
        ).exists()  # fmt: skip

        # markup from the customer is text in the staff's inbox (and the agent's in the widget)
        customer_says(customer, ATTACK)
        wait_text(agent.locator("#log .msg.customer"), "onerror")
        agent_says(agent, ATTACK)
        wait_text(customer.locator(f"{WIDGET} .msg.agent"), "onerror")
        time.sleep(0.5)  # give an injected handler every chance to run
        for page, log in ((agent, "#log"), (customer, WIDGET)):
            assert page.locator(f"{log} .msg img, {log} .msg script").count() == 0
            assert page.evaluate("window.__pwned") is None

        # hand back: the next question is answered by the cache again
        agent.locator("#hand-back").click()
        wait_text(customer.locator(f"{WIDGET} .msg.info"), "our assistant answers again")
        assert human.is_enabled() and human.text_content() == "Talk to a human"
        customer_says(customer, "How long does shipping take?")
        customer.wait_for_function(
            """(n) => document.querySelector('#cs-chat-widget').shadowRoot
                 .querySelectorAll('.msg.assistant').length > n""",
            arg=len(bot_answers),
            timeout=TIMEOUT_MS,
        )
        assert widget_texts(customer, "assistant")[-1] == (
            "Standard shipping takes 3-5 business days."
        )

        # resolve (after a second handoff), and the rating is stored
        customer.locator(f"{WIDGET} .human").click()
        agent.locator("#queue li").first.wait_for(timeout=TIMEOUT_MS)
        agent.locator("#queue li").first.click()
        agent.wait_for_function("() => !document.getElementById('claim').disabled")
        agent.locator("#claim").click()
        agent.wait_for_function("() => !document.getElementById('resolve').disabled")
        agent.locator("#resolve").click()
        rating = customer.locator(f"{WIDGET} form[aria-label='Rate this conversation']")
        rating.wait_for(timeout=TIMEOUT_MS)
        rating.get_by_role("button", name="Rate 4 out of 5").click()
        rating.locator("textarea").fill("Fast and friendly")
        rating.get_by_role("button", name="Send rating").click()
        wait_text(customer.locator(f"{WIDGET} .msg.info"), "Thanks for your rating.")
        rated = eventually(
            lambda: Handoff.objects.filter(site=site, rating__isnull=False).first(), "the rating"
        )
        assert (rated.status, rated.rating, rated.rating_comment) == (
            "resolved", 4, "Fast and friendly"
        )  # fmt: skip
        assert Handoff.objects.filter(site=site).count() == 2
        agent.locator("#queue-empty").wait_for(state="visible")
    finally:
        customer_context.close()
        agent_context.close()


# Counts the inbox's beeps: every sound it plays starts one oscillator.
COUNT_BEEPS = """
window.__beeps = 0;
const start = OscillatorNode.prototype.start;
OscillatorNode.prototype.start = function (...args) {
  window.__beeps += 1;
  return start.apply(this, args);
};
"""


def test_outside_opening_hours_the_address_left_reaches_the_inbox_with_a_beep(
    platform, browser, demo_site
) -> None:
    from tests.chat.test_agents_rules import _closed_all_day_today

    # given a site closed all day today, and its agent's inbox open with the sound switched on
    site = demo_site
    _closed_all_day_today(site)
    agent_user = make_agent("bea", [site], first_name="Bea")
    customer_context = browser.new_context(viewport={"width": 1000, "height": 760})
    agent_context = browser.new_context(viewport={"width": 1200, "height": 800})
    agent_context.add_cookies(
        [{"name": "sessionid", "value": session_cookie(agent_user), "url": platform.base_url}]
    )
    agent_context.add_init_script(COUNT_BEEPS)
    try:
        agent = agent_context.new_page()
        agent.goto(platform.base_url + "/agents/")
        agent.locator("#connection").filter(has_text="Connected as Bea").wait_for()
        assert agent.locator("#sound").text_content() == "Sound off"
        agent.locator("#sound").click()  # browsers play sound only after a click on the page
        assert agent.locator("#sound").text_content() == "Sound on"
        assert agent.locator("#sound").get_attribute("aria-pressed") == "true"
        assert agent.evaluate("window.__beeps") == 1  # the click's own beep, as a check
        customer = customer_context.new_page()
        customer.goto(platform.base_url + "/")
        customer.locator(f"{WIDGET} .launcher").click()
        customer.locator(f"{WIDGET} .msg.assistant").first.wait_for()

        # when the customer asks for a person
        customer.locator(f"{WIDGET} .human").click()
        # then the inbox beeps for the new conversation, and shows its badge
        agent.locator("#queue li").first.wait_for(timeout=TIMEOUT_MS)
        agent.wait_for_function("() => window.__beeps === 2")
        assert agent.locator("#badge").text_content() == "1"
        # and the widget says honestly (once) that nobody is there now, and asks for an address
        form = customer.locator(f"{WIDGET} form[aria-label='Leave your e-mail address']")
        form.wait_for(timeout=TIMEOUT_MS)
        told = customer.locator(f"{WIDGET} .msg").filter(has_text="away right now")
        assert told.count() == 1 and "away right now" not in form.text_content()
        # and says it again, once, with the form, after a reload
        customer.reload()
        form.wait_for(timeout=TIMEOUT_MS)
        assert told.count() == 1 and form.count() == 1

        # when the customer leaves an address
        form.locator("input[type=email]").fill("ada@example.com")
        form.get_by_role("button", name="Send").click()
        # then the widget confirms it, without the form
        wait_text(customer.locator(f"{WIDGET} .msg.info"), "we will reply to ada@example.com")
        form.wait_for(state="detached")
        # and the inbox shows it live, in the queue and on the conversation
        wait_text(agent.locator("#queue li .contact"), "E-mail left: ada@example.com")
        agent.locator("#queue li").first.click()
        wait_text(agent.locator("#chat-contact"), "ada@example.com")
        handoff = Handoff.objects.get(site=site)
        assert (handoff.status, handoff.unavailable, handoff.contact_email) == (
            "waiting", "closed", "ada@example.com"
        )  # fmt: skip
        # and a reload of the widget does not ask for the address again
        customer.reload()
        customer.locator(f"{WIDGET} .msg.assistant").first.wait_for()
        customer.locator(f"{WIDGET} .human").wait_for()
        time.sleep(1.0)
        assert (
            customer.locator(f"{WIDGET} form[aria-label='Leave your e-mail address']").count() == 0
        )
        # and with the sound switched off, nothing more is played
        agent.locator("#sound").click()
        assert agent.locator("#sound").text_content() == "Sound off"
        assert agent.evaluate("window.__beeps") == 2
    finally:
        customer_context.close()
        agent_context.close()
