"""Outbound webhooks: signing, one delivery attempt, and the retry schedule.

Each event is one `WebhookDelivery` whose JSON body is fixed when it is queued; every attempt
signs it afresh (a new timestamp) and is logged (`WebhookAttempt`). The signature header is

    X-Chatplatform-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

so a receiver recomputes the HMAC over the exact bytes received and rejects old timestamps
(replays); `X-Chatplatform-Delivery` is the same on every attempt of one event (deduplicate on
it: a retry after a lost response repeats a delivery the receiver already has).
"""

from __future__ import annotations

import hashlib
import hmac
import random
import time

import requests
from django.utils import timezone

from chatplatform.agents import config
from chatplatform.agents.models import WebhookAttempt, WebhookDelivery

SIGNATURE_HEADER = "X-Chatplatform-Signature"
DELIVERY_HEADER = "X-Chatplatform-Delivery"
EVENT_HEADER = "X-Chatplatform-Event"
# A receiver should refuse a signature older than this (what `verify` does).
SIGNATURE_TOLERANCE_S = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(secret: str, header: str, body: bytes, now: float | None = None) -> bool:
    """What a receiver does: the header's HMAC matches the body and its time is recent."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > SIGNATURE_TOLERANCE_S:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


def backoff_s(failed_attempts: int, rng: random.Random | None = None) -> float:
    """Wait before the next attempt: BASE * 2^(n-1), capped, the second half jittered."""
    delay = min(
        config.WEBHOOK_RETRY_BASE_S * 2 ** (failed_attempts - 1), config.WEBHOOK_MAX_DELAY_S
    )
    return delay / 2 + (rng or random).random() * delay / 2


def attempt(delivery: WebhookDelivery, secret: str) -> bool:
    """POST the delivery once and log it; True on a 2xx answer. Redirects are not followed (a
    receiver that moved must be re-configured, not silently chased)."""
    body = delivery.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "chatplatform-webhooks/1",
        SIGNATURE_HEADER: sign(secret, int(time.time()), body),
        DELIVERY_HEADER: str(delivery.pk),
        EVENT_HEADER: delivery.event,
    }
    started = time.monotonic()
    status_code, error = None, ""
    try:
        response = requests.post(
            delivery.url,
            data=body,
            headers=headers,
            timeout=config.WEBHOOK_TIMEOUT_S,
            allow_redirects=False,
        )
        status_code = response.status_code
        response.close()
    except requests.RequestException as failure:
        error = f"{type(failure).__name__}: {failure}"[:500]
    ok = status_code is not None and 200 <= status_code < 300
    WebhookAttempt.objects.create(
        delivery=delivery,
        status_code=status_code,
        error=error,
        duration_ms=(time.monotonic() - started) * 1000.0,
    )
    delivery.attempts += 1
    if ok:
        delivery.status, delivery.delivered_at = WebhookDelivery.Status.DELIVERED, timezone.now()
    elif delivery.attempts >= config.WEBHOOK_MAX_ATTEMPTS:
        delivery.status = WebhookDelivery.Status.FAILED
    delivery.save(update_fields=["attempts", "status", "delivered_at"])
    return ok
