"""The widget in Debian's Chromium (driven by Playwright, no browser download) on the demo
shop page served by the real platform (daphne, Redis, CPU and inference workers)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.conf import settings

from chatplatform.conversations.models import Message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.slow]

ANSWER_TIMEOUT_MS = 60_000  # a model answer on a shared 2-core box
SCREENSHOT = Path(settings.VAR_DIR) / "widget.png"  # copied to docs/widget.png by hand


PHONE = {"width": 375, "height": 667}  # a small phone's CSS viewport


@pytest.fixture
def shop(platform, browser, demo_site):
    """The demo page with the widget open, for a site that allows the platform's origin."""
    site = demo_site
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
    assert answers(page).nth(1).locator(".demo-tag").count() == 0  # a real (FAQ) answer
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
    # the platform runs the offline model (random weights): the page and the answer say so
    assert answers(page).nth(1).locator(".demo-tag").text_content() == (
        "demo model: random weights, not a real answer"
    )
    assert page.locator("#demo-model-note").is_visible()


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


def test_keyboard_only_on_a_phone_sized_screen(platform, browser, demo_site) -> None:
    context = browser.new_context(viewport=PHONE, has_touch=True, is_mobile=True)
    page = context.new_page()
    try:
        page.goto(platform.base_url + "/")
        launcher = page.get_by_role("button", name="Open chat")
        # the launcher is reachable with Tab from the page (it is the last focusable element)
        for _ in range(40):
            page.keyboard.press("Tab")
            if page.evaluate(
                "() => document.activeElement?.id === 'cs-chat-widget' &&"
                " document.activeElement.shadowRoot.activeElement?.classList.contains('launcher')"
            ):
                break
        else:
            pytest.fail("Tab never reached the chat launcher")
        page.keyboard.press("Enter")
        # the panel is an ARIA dialog that fills the phone screen, with the input focused
        dialog = page.get_by_role("dialog", name="Customer service chat")
        dialog.wait_for()
        box = dialog.bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["y"] >= 0
        assert box["x"] + box["width"] <= PHONE["width"] + 0.5
        assert box["y"] + box["height"] <= PHONE["height"] + 0.5
        assert page.get_by_role("log", name="Messages").is_visible()
        assert (
            page.evaluate(
                "() => document.querySelector('#cs-chat-widget').shadowRoot.activeElement?.id"
            )
            == "cs-input"
        )
        # typing and Enter send the question; the answer arrives
        page.keyboard.type("How long does shipping take?")
        page.keyboard.press("Enter")
        wait_for_answers(page, 2)
        assert answers(page).nth(1).locator(".text").text_content() == (
            "Standard shipping takes 3-5 business days."
        )
        # Escape closes the dialog and gives focus back to the launcher
        page.keyboard.press("Escape")
        dialog.wait_for(state="hidden")
        assert launcher.is_visible()
        assert page.evaluate(
            "() => document.querySelector('#cs-chat-widget').shadowRoot.activeElement"
            "?.classList.contains('launcher')"
        )
    finally:
        context.close()


def test_quick_reply_then_the_chat_survives_a_page_reload(shop) -> None:
    page, site = shop
    # a quick-reply button (the site's top FAQ) asks its question and is answered from the cache
    page.get_by_role("group", name="Common questions").get_by_role(
        "button", name="How long does shipping take?"
    ).click()
    wait_for_answers(page, 2)
    assert answers(page).nth(1).locator(".text").text_content() == (
        "Standard shipping takes 3-5 business days."
    )
    conversation_id = page.evaluate(
        "() => JSON.parse(localStorage.getItem(Object.keys(localStorage)[0])).conversationId"
    )
    # when the customer reloads the page
    page.reload()
    # then the widget reopens on the same conversation with its messages, and goes on with it
    page.locator("#cs-chat-widget .msg.customer").first.wait_for()
    assert page.locator("#cs-chat-widget .msg.customer").first.text_content() == (
        "How long does shipping take?"
    )
    ask(page, "When will my order arrive?")
    wait_for_answers(page, 3)
    assert (
        page.evaluate(
            "() => JSON.parse(localStorage.getItem(Object.keys(localStorage)[0])).conversationId"
        )
        == conversation_id
    )
    stored = [
        (str(conversation), text)
        for conversation, text in Message.objects.filter(site=site, role="customer")
        .order_by("received_at")
        .values_list("conversation_id", "text")
    ]
    assert stored == [
        (conversation_id, "How long does shipping take?"),
        (conversation_id, "When will my order arrive?"),
    ]


HOSTILE_HOST_CSS = """
* { box-sizing: content-box; letter-spacing: 4px; }
body { font: 30px serif; color: rgb(255, 0, 0); }
div { padding: 20px; }
button { color: rgb(0, 0, 0); font-size: 40px; }
span.probe { background: rgb(0, 255, 0); }
section { width: 10px; }
"""


def test_no_css_leaks_between_the_host_page_and_the_widget(shop) -> None:
    page, _ = shop
    page.add_style_tag(content=HOSTILE_HOST_CSS)
    page.evaluate(
        "() => { const b = document.createElement('span'); b.className = 'probe';"
        " document.body.appendChild(b); }"
    )
    widget = page.evaluate(
        """() => {
            const root = document.querySelector('#cs-chat-widget').shadowRoot;
            const css = (selector) => getComputedStyle(root.querySelector(selector));
            return {
                launcher: css('.launcher').backgroundColor,
                panelWidth: css('.panel').width,
                panelFont: css('.panel').fontSize,
                panelColor: css('.panel').color,
                spacing: css('.log').letterSpacing,
            };
        }"""
    )
    # the host's rules (even `*`, `button`, `section`, inherited font and color) stay outside
    assert widget == {
        "launcher": "rgb(31, 95, 191)",
        "panelWidth": "370px",
        "panelFont": "15px",
        "panelColor": "rgb(27, 27, 27)",
        "spacing": "normal",
    }
    # and the widget's own styles do not reach the host page
    host = page.evaluate(
        """() => ({
            body: getComputedStyle(document.body).color,
            probe: getComputedStyle(document.querySelector('span.probe')).backgroundColor,
        })"""
    )
    assert host == {"body": "rgb(255, 0, 0)", "probe": "rgb(0, 255, 0)"}


# A stand-in for the page's WebSocket that records what the widget sends and lets a test cut
# the connection (`__blockSockets`: new sockets go to a closed port) or lose one outgoing
# message frame (`__dropNextMessage`), so the widget's handling of those cases can be seen.
SOCKET_PROBE = """
(() => {
  const Real = window.WebSocket;
  window.__sockets = [];
  window.__sent = [];
  window.__blockSockets = false;
  window.__dropNextMessage = false;
  function Probe(url, protocols) {
    const socket = new Real(window.__blockSockets ? "ws://127.0.0.1:9/" : url, protocols);
    const send = socket.send.bind(socket);
    socket.send = (data) => {
      const frame = JSON.parse(data);
      if (frame.type === "message" && window.__dropNextMessage) {
        window.__dropNextMessage = false;
        return;
      }
      window.__sent.push(frame);
      send(data);
    };
    window.__sockets.push(socket);
    return socket;
  }
  Probe.prototype = Real.prototype;
  Object.assign(Probe, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
  window.WebSocket = Probe;
})();
"""


@pytest.fixture
def probed_shop(shop):
    """The demo page (widget open) with SOCKET_PROBE installed before the widget loads."""
    page, site = shop
    page.add_init_script(SOCKET_PROBE)
    page.reload()
    page.locator("#cs-chat-widget .launcher[aria-expanded=true]").wait_for(state="attached")
    page.wait_for_function("() => window.__sent.some((f) => f.type === 'hello')")
    page.locator("#cs-chat-widget .quick button").first.wait_for()  # welcomed
    return page, site


def widget_eval(page, body: str):
    return page.evaluate(
        f"() => {{ const root = document.querySelector('#cs-chat-widget').shadowRoot; {body} }}"
    )


def test_refused_message_is_given_back_and_typing_stops(probed_shop) -> None:
    page, site = probed_shop
    # the input is limited to the server's max_message_chars from the welcome
    assert widget_eval(page, "return root.querySelector('textarea').maxLength;") == 2000
    # when a message over the limit still reaches the server (maxlength removed by hand)
    widget_eval(page, "root.querySelector('textarea').removeAttribute('maxlength');")
    too_long = "x" * 2001
    ask(page, too_long)
    # then the server's refusal is shown, the message leaves the chat and its text comes back
    page.locator("#cs-chat-widget .msg.notice").filter(has_text="message_too_long").wait_for()
    assert page.locator("#cs-chat-widget .msg.customer").count() == 0
    assert page.locator("#cs-chat-widget textarea").input_value() == too_long
    assert page.locator("#cs-chat-widget .typing").is_hidden()
    outbox = page.evaluate(
        "() => JSON.parse(localStorage.getItem(Object.keys(localStorage)[0])).outbox"
    )
    assert outbox == []
    assert not Message.objects.filter(site=site, role="customer").exists()


def test_message_failed_on_the_server_is_sent_again(probed_shop) -> None:
    page, _ = probed_shop
    # given a message lost on its way, and the server's internal_error naming it
    page.evaluate("() => { window.__dropNextMessage = true; }")
    ask(page, "How long does shipping take?")
    cid = page.evaluate(
        "() => JSON.parse(localStorage.getItem(Object.keys(localStorage)[0])).outbox[0].cid"
    )
    page.evaluate(
        """(cid) => window.__sockets.at(-1).dispatchEvent(new MessageEvent("message", {
            data: JSON.stringify({type: "error", code: "internal_error",
                                  message: "Something went wrong on our side.", ref: cid}),
        }))""",
        cid,
    )
    # then the widget sends it again (same id) and the answer arrives
    wait_for_answers(page, 2)
    sent = page.evaluate("() => window.__sent.filter((f) => f.type === 'message')")
    assert [frame["client_message_id"] for frame in sent] == [cid]
    assert page.locator("#cs-chat-widget .msg.customer").count() == 1


def test_feedback_while_disconnected_is_not_shown_as_given(probed_shop) -> None:
    page, _ = probed_shop
    ask(page, "How long does shipping take?")
    wait_for_answers(page, 2)
    helpful = answers(page).nth(1).get_by_role("button", name="Helpful", exact=True)
    # when the connection is lost and the customer clicks "Helpful"
    page.evaluate("() => { window.__blockSockets = true; window.__sockets.at(-1).close(); }")
    page.locator("#cs-chat-widget .status").wait_for(state="visible")  # "Reconnecting..."
    helpful.click()
    # then the button is not pressed, the customer is told, and nothing is recorded
    assert helpful.get_attribute("aria-pressed") == "false"
    page.locator("#cs-chat-widget .msg.notice").filter(has_text="feedback was not sent").wait_for()
    assert not Message.objects.filter(source="faq", feedback__isnull=False).exists()
    # and once reconnected, the click counts
    page.evaluate("() => { window.__blockSockets = false; }")
    page.locator("#cs-chat-widget .status").wait_for(state="hidden", timeout=30_000)
    helpful.click()
    assert helpful.get_attribute("aria-pressed") == "true"
    eventually(lambda: Message.objects.filter(source="faq", feedback=1).exists(), "the feedback")


def refuse_hellos_from(redis_url: str, address: str) -> list[str]:
    """Put `address` over its per-minute limit of non-message frames (a hello is one), so the
    real server refuses its hellos with rate_limited; returns the counters to delete to lift it.
    Both the current and the next window are set, in case the minute turns during the test."""
    import redis as redis_lib

    from chatplatform.chat import config, limits

    window = int(time.time()) // limits.WINDOW_S
    keys = [f"{limits._KEY_PREFIX}:frames:ip:{address}:{w}" for w in (window, window + 1)]
    client = redis_lib.Redis.from_url(redis_url)
    for key in keys:
        client.set(key, config.FRAMES_PER_MINUTE_PER_IP, ex=limits.WINDOW_S * 2)
    return keys


# config.SITE_REFRESH_S (5 s by default, which the test platform keeps) plus a margin.
SITE_REFRESH_WAIT_S = 5.5


def hellos_sent(page) -> int:
    return page.evaluate("() => window.__sent.filter((f) => f.type === 'hello').length")


def test_hello_refused_for_a_while_is_said_again_until_welcomed(shop, redis_url: str) -> None:
    import redis as redis_lib

    page, _ = shop
    # given a server that refuses hellos from this address for now (rate_limited)
    keys = refuse_hellos_from(redis_url, "127.0.0.1")
    page.add_init_script(SOCKET_PROBE)
    page.reload()
    # when the widget's hello is refused, it says hello again on a new socket (backing off)
    page.wait_for_function(
        "() => window.__sent.filter((f) => f.type === 'hello').length >= 2", timeout=10_000
    )
    assert page.evaluate("() => window.__sockets.length") >= 2
    page.locator("#cs-chat-widget .status").wait_for(state="visible")  # "Reconnecting..."
    # then once the limit lifts, the next hello is welcomed and the chat works
    redis_lib.Redis.from_url(redis_url).delete(*keys)
    page.locator("#cs-chat-widget .quick button").first.wait_for(timeout=30_000)  # welcomed
    page.locator("#cs-chat-widget .status").wait_for(state="hidden")
    assert page.locator("#cs-chat-widget .msg.notice").count() == 0  # a passing refusal
    ask(page, "How long does shipping take?")
    wait_for_answers(page, 2)


def test_hello_refused_for_good_stops_reconnecting(shop) -> None:
    page, site = shop
    # given a site that no longer allows the shop's origin
    site.allowed_origins = ["https://elsewhere.example"]
    site.save()
    page.add_init_script(SOCKET_PROBE)
    page.reload()
    # when the widget's hello is refused with origin_not_allowed
    page.locator("#cs-chat-widget .msg.notice").filter(has_text="origin_not_allowed").wait_for()
    # then it says so and does not hammer the server with more hellos
    page.locator("#cs-chat-widget .status").filter(has_text="Chat unavailable").wait_for()
    time.sleep(2.0)  # two backoff periods at the shortest
    assert hellos_sent(page) == 1
    assert page.evaluate("() => window.__sockets.length") == 1
    # and nothing can be typed into a chat that will not connect
    assert page.locator("#cs-chat-widget textarea").is_disabled()
    assert page.get_by_role("button", name="Send").is_disabled()


def test_site_switched_off_during_a_chat_stops_the_widget_and_gives_the_message_back(
    shop,
) -> None:
    page, site = shop
    page.locator("#cs-chat-widget .quick button").first.wait_for()  # welcomed
    # given an admin who deactivates the site while the customer's chat is open
    site.is_active = False
    site.save()
    time.sleep(SITE_REFRESH_WAIT_S)  # the open chat re-reads its site this often
    # when the customer sends a message
    ask(page, "Are you still open?")
    # then it is refused with the reason, the text is back in the input, and the chat stops
    page.locator("#cs-chat-widget .msg.notice").filter(has_text="unknown_site").wait_for()
    page.locator("#cs-chat-widget .status").filter(has_text="Chat unavailable").wait_for()
    assert page.locator("#cs-chat-widget textarea").input_value() == "Are you still open?"
    assert page.locator("#cs-chat-widget textarea").is_disabled()
    assert page.locator("#cs-chat-widget .msg.user").count() == 0


def send_as_worker(conversation_id: str, event: dict) -> None:
    """A stream event to the conversation's sockets, as an inference worker sends it (from
    another thread: Playwright's event loop runs in this one)."""
    from concurrent.futures import ThreadPoolExecutor

    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from inference.contracts import conversation_group

    send = async_to_sync(get_channel_layer().group_send)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(send, conversation_group(conversation_id), event).result()


def widget_conversation_id(page) -> str:
    return page.evaluate(
        "() => JSON.parse(localStorage.getItem(Object.keys(localStorage)[0])).conversationId"
    )


def test_a_restarted_answer_replaces_the_text_streamed_before_it(shop) -> None:
    # given a customer's open conversation, and an answer that was streaming to it when its
    # worker (or the model server) failed, and then streams again from its beginning
    from chatplatform.chat import store

    page, _ = shop
    group, question = widget_conversation_id(page), "restarted-question"
    reply = f"#cs-chat-widget .msg.assistant[data-id='{store.reply_id_for(question)}'] .text"
    send_as_worker(group, {"type": "answer.start", "message_id": question})
    send_as_worker(
        group, {"type": "answer.delta", "message_id": question, "text": "Partial first try"}
    )
    page.locator(reply).filter(has_text="Partial first try").wait_for()
    # when the second attempt starts and streams
    send_as_worker(group, {"type": "answer.start", "message_id": question})
    send_as_worker(group, {"type": "answer.delta", "message_id": question, "text": "Whole"})
    # then only the second attempt's text is shown, before the answer even ends
    page.locator(reply).filter(has_text="Whole").wait_for()
    assert page.locator(reply).text_content() == "Whole"


# How long before the answer timeout the resumed socket's timer is left: room for a reload
# and the first streamed text on a loaded machine.
TIMEOUT_LEFT_S = 10


def test_answer_timeout_takes_back_the_partly_streamed_text(shop, platform) -> None:
    # given a question held back from the model (the worker is frozen), that arrived almost
    # the answer timeout ago: its timer runs from the stored arrival, here on a resumed socket
    from datetime import timedelta

    from django.utils import timezone

    from chatplatform.chat import config, store

    page, _ = shop
    question_text = "Do you sharpen ice axes?"
    platform.pause("worker-inference")
    try:
        ask(page, question_text)
        page.wait_for_function(
            "() => !JSON.parse(localStorage.getItem(Object.keys(localStorage)[0])).outbox.length"
        )  # acked: stored, its model request queued
        question = Message.objects.get(role="customer", text=question_text)
        arrived = timezone.now() - timedelta(seconds=config.ANSWER_TIMEOUT_S - TIMEOUT_LEFT_S)
        Message.objects.filter(pk=question.pk).update(received_at=arrived)
        page.reload()
        page.locator("#cs-chat-widget .quick button").first.wait_for()  # welcomed again
        # and part of its answer streamed, as a worker streams it
        conversation_id, question_id = widget_conversation_id(page), str(question.pk)
        reply = f"#cs-chat-widget .msg.assistant[data-id='{store.reply_id_for(question_id)}']"
        send_as_worker(conversation_id, {"type": "answer.start", "message_id": question_id})
        send_as_worker(
            conversation_id,
            {"type": "answer.delta", "message_id": question_id, "text": "We sharpen ice"},
        )
        page.locator(reply).filter(has_text="We sharpen ice").wait_for()
        # when the answer timeout falls due
        notice = page.locator("#cs-chat-widget .msg.notice").filter(has_text="answer_timeout")
        notice.wait_for(timeout=(TIMEOUT_LEFT_S + 15) * 1000)
        # then the partial text is taken away (no answer follows: docs/protocol.md)
        page.locator(reply).wait_for(state="detached")
        assert page.locator("#cs-chat-widget .msg.customer .text").last.text_content() == (
            question_text
        )
    finally:
        platform.resume("worker-inference")
    # and the worker, let go, answers nothing: the timeout closed the question
    time.sleep(3.0)
    assert page.locator(reply).count() == 0
    stored = Message.objects.get(pk=store.reply_id_for(question_id))
    assert (stored.state, stored.text, stored.delivered) == ("failed", "", True)
    # and a reload shows the question without an answer, and no second notice
    page.reload()
    page.locator("#cs-chat-widget .quick button").first.wait_for()
    time.sleep(1.0)
    assert page.locator(reply).count() == 0
    assert page.locator("#cs-chat-widget .msg.notice").count() == 0
