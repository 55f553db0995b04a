"""Admin of the human-agent side: a site's agent settings and opening hours (on the site's
page), handoffs (read-only records) and the webhook delivery log with every attempt."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from chatplatform.agents import notify
from chatplatform.agents.models import (
    AgentSettings,
    Handoff,
    OpeningHours,
    WebhookAttempt,
    WebhookDelivery,
)
from chatplatform.conversations.admin import ReadOnlyAdminMixin
from chatplatform.tenants.admin import SiteAdmin
from inference.contracts import Queue


class AgentSettingsInline(admin.StackedInline):
    model = AgentSettings
    can_delete = False
    extra = 1
    max_num = 1


class OpeningHoursInline(admin.TabularInline):
    model = OpeningHours
    extra = 0


# On the site's own page: a site is set up in one place.
SiteAdmin.inlines = [*SiteAdmin.inlines, AgentSettingsInline, OpeningHoursInline]


@admin.register(Handoff)
class HandoffAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "requested_at",
        "site",
        "status",
        "agent",
        "claimed_at",
        "first_agent_reply_at",
        "ended_at",
        "unavailable",
        "contact_email",
        "rating",
    ]
    list_filter = ["site", "status", "unavailable", "rating"]
    search_fields = ["contact_email", "rating_comment", "conversation__id"]
    list_select_related = ["site", "agent"]


class WebhookAttemptInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = WebhookAttempt
    fields = ["attempted_at", "status_code", "error", "duration_ms"]
    readonly_fields = fields
    extra = 0


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "site", "event", "status", "attempts", "delivered_at", "url"]
    list_filter = ["site", "status", "event"]
    readonly_fields = ["id", "site", "event", "url", "status", "attempts", "created_at",
                       "delivered_at", "body"]  # fmt: skip
    inlines = [WebhookAttemptInline]
    list_select_related = ["site"]
    actions = ["retry_now"]

    @admin.action(description="Retry the selected failed deliveries now")
    def retry_now(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        from chatplatform.celery_app import app

        failed = list(queryset.filter(status=WebhookDelivery.Status.FAILED))
        for delivery in failed:
            # A fresh round of attempts for the same delivery (same id: receivers deduplicate).
            WebhookDelivery.objects.filter(pk=delivery.pk).update(
                status=WebhookDelivery.Status.PENDING, attempts=0
            )
            app.send_task(
                notify.DELIVER_WEBHOOK_TASK, args=[str(delivery.pk)], queue=Queue.CPU.value
            )
        messages.success(request, f"{len(failed)} deliveries queued again.")

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
