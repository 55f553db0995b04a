"""Telling people about a handoff: the e-mail through Django's e-mail backend (the test
outbox), and the signed webhook retried by the real Celery CPU worker against a real local
HTTP receiver."""

from __future__ import annotations

import json
import time

import pytest
import redis as redis_lib

from chatplatform.agents import emails, notify, store, webhooks
from chatplatform.agents.models import AgentSettings, WebhookDelivery
from chatplatform.chat.store import open_conversation
from chatplatform.conversations.models import Message
from tests.chat.conftest import make_site

pytestmark = pytest.mark.django_db(transaction=True)


def handoff_with(settings: dict[str, object], question: str = "Where is my parcel?"):
    site = make_site(cache_enabled=False)
    AgentSettings.objects.create(site=site, **settings)
    conversation_id, _ = open_conversation(site.pk, None, "v1", "203.0.113.9")
    Message.objects.create(
        site=site,
        conversation_id=conversation_id,
        role="customer",
        text=question,
        received_at=time_now(),
    )
    handoff, created = store.request_handoff(site.pk, conversation_id)
    assert created
    return site, handoff


def time_now():
    from django.utils import timezone

    return timezone.now()


# --- e-mail ---------------------------------------------------------------------------------


def test_a_new_handoff_is_mailed_to_the_support_address(mailoutbox) -> None:
    site, handoff = handoff_with({"support_email": "help@shop.example"})
    assert emails.send_handoff_email(handoff.handoff_id, emails.REQUESTED)
    [mail] = mailoutbox
    assert mail.to == ["help@shop.example"] and site.name in mail.subject
    assert "> Where is my parcel?" in mail.body
    assert f"/agents/?conversation={handoff.conversation_id}" in mail.body


def test_an_address_left_by_the_customer_is_the_reply_to(mailoutbox) -> None:
    _, handoff = handoff_with({"support_email": "help@shop.example"})
    store.leave_contact(handoff.conversation_id, "ada@example.com")
    assert emails.send_handoff_email(handoff.handoff_id, emails.CONTACT_LEFT)
    [mail] = mailoutbox
    assert mail.reply_to == ["ada@example.com"] and "ada@example.com" in mail.body


def test_no_support_address_no_mail(mailoutbox) -> None:
    _, handoff = handoff_with({})
    assert emails.send_handoff_email(handoff.handoff_id, emails.REQUESTED) is False
    assert mailoutbox == []


def test_an_event_queues_its_webhook_and_mail_on_the_cpu_queue(redis_url: str) -> None:
    _, handoff = handoff_with(
        {"support_email": "help@shop.example", "webhook_url": "http://127.0.0.1:9/hook"}
    )
    client = redis_lib.Redis.from_url(redis_url)
    client.delete("cpu")
    try:
        notify.handoff_event(handoff.handoff_id, notify.Event.REQUESTED)
        tasks = [json.loads(raw)["headers"]["task"] for raw in client.lrange("cpu", 0, -1)]
    finally:
        client.delete("cpu")  # no worker runs in this test: do not leave them for a later one
    assert sorted(tasks) == [notify.DELIVER_WEBHOOK_TASK, notify.SEND_EMAIL_TASK]
    delivery = WebhookDelivery.objects.get()
    body = json.loads(delivery.body)
    assert body["event"] == "handoff.requested"
    assert body["conversation_id"] == handoff.conversation_id


# --- webhook signature ----------------------------------------------------------------------


def test_signature_verifies_only_the_exact_body_secret_and_a_recent_time() -> None:
    body = b'{"event":"handoff.requested"}'
    now = int(time.time())
    header = webhooks.sign("s3cret", now, body)
    assert webhooks.verify("s3cret", header, body)
    assert not webhooks.verify("s3cret", header, body + b" ")
    assert not webhooks.verify("other", header, body)
    old = webhooks.sign("s3cret", now - webhooks.SIGNATURE_TOLERANCE_S - 5, body)
    assert not webhooks.verify("s3cret", old, body)
    for broken in ("", "t=abc,v1=00", "v1=00", "t=1"):
        assert not webhooks.verify("s3cret", broken, body)


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    import random

    from chatplatform.agents import config

    rng = random.Random(7)
    for failed in (1, 2, 3):
        delay = config.WEBHOOK_RETRY_BASE_S * 2 ** (failed - 1)
        assert delay / 2 <= webhooks.backoff_s(failed, rng) <= delay
    assert webhooks.backoff_s(40, rng) <= config.WEBHOOK_MAX_DELAY_S


def test_the_admin_shows_the_delivery_log_and_the_sites_agent_settings() -> None:
    from django.contrib.auth.models import User
    from django.test import Client as HttpClient

    from chatplatform.agents.models import WebhookAttempt

    site, handoff = handoff_with({"webhook_url": "http://127.0.0.1:9/hook"})
    delivery = WebhookDelivery.objects.create(
        site=site, event="handoff.requested", url="http://127.0.0.1:9/hook", body="{}",
        status="failed", attempts=1,
    )  # fmt: skip
    WebhookAttempt.objects.create(delivery=delivery, status_code=502, duration_ms=12.5)
    client = HttpClient()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    listing = client.get("/admin/agents/webhookdelivery/").content.decode()
    assert "handoff.requested" in listing and "failed" in listing
    detail = client.get(f"/admin/agents/webhookdelivery/{delivery.pk}/change/").content.decode()
    assert "502" in detail and "12.5" in detail
    site_page = client.get(f"/admin/tenants/site/{site.pk}/change/").content.decode()
    assert "Human agent settings" in site_page and "Opening hours" in site_page
    assert client.get("/admin/agents/handoff/").status_code == 200
