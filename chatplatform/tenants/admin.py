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
    readonly_fields = ["widget_key", "visitor_token_key", "created_at"]
    actions: list = []  # other apps append site actions (e.g. purging generated cache entries)

    @admin.display(description="visitor token key")
    def visitor_token_key(self, site: Site) -> str:
        """The key this site's server signs visitor tokens with (README: "Embedding the
        widget"); derived from SECRET_KEY, so it changes with it."""
        from chatplatform.chat.visitors import site_token_key

        return site_token_key(site.widget_key) if site.widget_key else ""
