"""Admin for dashboard access grants: which staff user may read which site's dashboard."""

from django.contrib import admin

from chatplatform.dashboards.models import SiteAccess


@admin.register(SiteAccess)
class SiteAccessAdmin(admin.ModelAdmin):
    list_display = ["user", "site"]
    list_filter = ["site"]
    list_select_related = ["user", "site"]
