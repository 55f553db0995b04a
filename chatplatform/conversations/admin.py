"""Conversations are records of what customers said: read-only in the admin."""

from django.contrib import admin
from django.http import HttpRequest

from chatplatform.conversations.models import Conversation, Message


class ReadOnlyAdminMixin:
    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class MessageInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Message
    fk_name = "conversation"
    fields = [
        "received_at",
        "role",
        "text",
        "source",
        "ttft_ms",
        "total_ms",
        "sla_met",
        "feedback",
    ]
    readonly_fields = fields
    extra = 0
    ordering = ["received_at"]


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "site",
        "visitor_id",
        "status",
        "started_at",
        "last_activity_at",
    ]
    list_filter = ["site", "status", "started_at"]
    search_fields = ["visitor_id", "messages__text"]
    readonly_fields = ["id", "site", "visitor_id", "status", "client_ip", "started_at",
                       "last_activity_at", "handoff_requested_at"]  # fmt: skip
    inlines = [MessageInline]
    list_select_related = ["site"]


@admin.register(Message)
class MessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "received_at",
        "site",
        "role",
        "source",
        "short_text",
        "ttft_ms",
        "sla_met",
    ]
    list_filter = ["site", "role", "source", "sla_met", "feedback"]
    search_fields = ["text"]
    list_select_related = ["site"]

    @admin.display(description="text")
    def short_text(self, message: Message) -> str:
        return message.text[:80]
