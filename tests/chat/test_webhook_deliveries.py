"""Webhook deliveries through the real Celery CPU worker of the test platform, against a real
local HTTP receiver: signed, retried with backoff, logged, given up after the last attempt.

(Named to run after the in-process consumer tests: the platform's inference worker, once
started, takes the inference requests those tests read from the broker.)"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise

import pytest
from django.contrib.auth.models import User
from django.test import Client as HttpClient

from chatplatform.agents import notify, webhooks
from chatplatform.agents.models import AgentSettings, WebhookAttempt, WebhookDelivery
from embedded_redis import free_port
from tests.chat.agents_support import eventually
from tests.chat.test_agents_notifications import handoff_with

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


# --- the webhook through the real Celery worker ---------------------------------------------


class Receiver:
    """A local HTTP endpoint answering each POST with the next status of `statuses` (the last
    one repeats), keeping what it received."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                status = receiver.statuses[min(len(receiver.received), len(statuses)) - 1]
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/chat"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory() -> Iterator:
    made: list[Receiver] = []

    def make(statuses: list[int]) -> Receiver:
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def test_webhook_is_signed_and_retried_with_backoff_until_delivered(
    platform, receiver_factory
) -> None:
    # given a receiver that fails twice, then accepts (the platform's worker: 3 attempts max,
    # backoff base 0.3 s)
    receiver = receiver_factory([500, 503, 200])
    site, handoff = handoff_with({"webhook_url": receiver.url})
    secret = AgentSettings.objects.get(site=site).webhook_secret
    # when the handoff's event is sent
    notify.handoff_event(handoff.handoff_id, notify.Event.REQUESTED)
    # then the real CPU worker delivers it on the third attempt, each one logged
    delivery = eventually(
        lambda: WebhookDelivery.objects.filter(status="delivered").first(), "the delivery"
    )
    attempts = list(WebhookAttempt.objects.filter(delivery=delivery).order_by("attempted_at"))
    assert [a.status_code for a in attempts] == [500, 503, 200]
    assert delivery.attempts == 3 and delivery.delivered_at is not None
    gaps = [(b.attempted_at - a.attempted_at).total_seconds() for a, b in pairwise(attempts)]
    assert gaps[0] >= 0.15 and gaps[1] >= 0.3  # 0.3 * 2^(n-1), the second half jittered
    # every attempt carried the same delivery id and a valid signature of the exact body
    assert len(receiver.received) == 3
    for headers, body in receiver.received:
        assert webhooks.verify(secret, headers[webhooks.SIGNATURE_HEADER], body)
        assert headers[webhooks.DELIVERY_HEADER] == str(delivery.pk)
        assert headers[webhooks.EVENT_HEADER] == "handoff.requested"
        assert json.loads(body)["handoff"]["id"] == handoff.handoff_id


def test_webhook_gives_up_after_the_last_attempt(platform, receiver_factory) -> None:
    receiver = receiver_factory([503])
    _, handoff = handoff_with({"webhook_url": receiver.url})
    notify.handoff_event(handoff.handoff_id, notify.Event.REQUESTED)
    delivery = eventually(
        lambda: WebhookDelivery.objects.filter(status="failed").first(), "the last attempt"
    )
    assert delivery.attempts == 3
    time.sleep(1.5)  # no fourth attempt comes
    assert len(receiver.received) == 3
    assert WebhookAttempt.objects.filter(delivery=delivery).count() == 3
    # when the receiver is fixed and an admin retries the failed delivery from its log
    receiver.statuses[:] = [503, 503, 503, 200]  # the fourth call succeeds
    admin = HttpClient()
    admin.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    response = admin.post(
        "/admin/agents/webhookdelivery/",
        {"action": "retry_now", "_selected_action": [str(delivery.pk)]},
        follow=True,
    )
    assert "1 deliveries queued again." in response.content.decode()
    # then the same delivery (same id for the receiver to deduplicate) goes through, logged
    eventually(
        lambda: WebhookDelivery.objects.filter(pk=delivery.pk, status="delivered").exists(),
        "the retried delivery",
    )
    assert len(receiver.received) == 4
    assert receiver.received[-1][0][webhooks.DELIVERY_HEADER] == str(delivery.pk)
    codes = WebhookAttempt.objects.filter(delivery=delivery).order_by("attempted_at")
    assert [a.status_code for a in codes] == [503, 503, 503, 200]
