"""Celery tasks of the human-agent side (CPU queue): webhook deliveries with retries, e-mails,
and the periodic sweep. Each is a thin wrapper over a plain function (tested directly too)."""

from __future__ import annotations

import smtplib

from celery import shared_task
from django.db import OperationalError

from chatplatform.agents import emails, notify, sweep, webhooks
from chatplatform.agents.models import AgentSettings, WebhookDelivery

SWEEP_TASK = "chatplatform.agents.sweep"


@shared_task(name=notify.DELIVER_WEBHOOK_TASK, bind=True, acks_late=True, max_retries=None)
def deliver_webhook(self, delivery_id: str) -> str:  # noqa: ANN001 - Celery's task instance
    """One attempt; a failure is retried after `webhooks.backoff_s` until the site's delivery
    has WEBHOOK_MAX_ATTEMPTS attempts (counted in the database, so a redelivered task does
    not add attempts beyond the limit)."""
    delivery = WebhookDelivery.objects.filter(pk=delivery_id).first()
    if delivery is None or delivery.status != WebhookDelivery.Status.PENDING:
        return "gone" if delivery is None else delivery.status
    secret = (
        AgentSettings.objects.filter(site_id=delivery.site_id)
        .values_list("webhook_secret", flat=True)
        .first()
    )
    if secret is None:
        delivery.status = WebhookDelivery.Status.FAILED
        delivery.save(update_fields=["status"])
        return "no settings"
    if webhooks.attempt(delivery, secret):
        return "delivered"
    if delivery.status == WebhookDelivery.Status.FAILED:
        return "failed"
    raise self.retry(countdown=webhooks.backoff_s(delivery.attempts))


@shared_task(
    name=notify.SEND_EMAIL_TASK,
    acks_late=True,
    autoretry_for=(smtplib.SMTPException, OSError, OperationalError),
    retry_backoff=30,
    max_retries=6,
)
def send_email(handoff_id: str, kind: str) -> bool:
    return emails.send_handoff_email(handoff_id, kind)


@shared_task(name=SWEEP_TASK, acks_late=True)
def run_sweep() -> dict[str, int]:
    return sweep.sweep()
