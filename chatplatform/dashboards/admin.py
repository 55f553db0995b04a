from django.contrib import admin

from chatplatform.dashboards.models import SiteAccess


@admin.register(SiteAccess)
class SiteAccessAdmin(admin.ModelAdmin):
    list_display = ["user", "site"]
    list_filter = ["site"]
    autocomplete_fields: list[str] = []
    list_select_related = ["user", "site"]
