from django.contrib import admin

from chatplatform.tenants.models import Site


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "widget_key",
        "sla_ms",
        "cache_enabled",
        "suggestion_policy",
        "is_active",
        "created_at",
    ]
    list_filter = ["is_active", "cache_enabled", "suggestion_policy"]
    search_fields = ["name", "widget_key"]
    readonly_fields = ["widget_key", "created_at"]
    actions: list = []  # other apps append site actions (e.g. purging generated cache entries)
