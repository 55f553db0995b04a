"""The Site admin action that purges a site's generated cache entries.

Added to the Site admin's `actions` list (which the tenants app leaves open for other apps)
in SemanticcacheConfig.ready(), so the tenants app needs no import of the cache.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from chatplatform.semanticcache.service import get_cache
from chatplatform.tenants.models import Site


@admin.action(description="Purge generated cache entries", permissions=["change"])
def purge_generated_cache_entries(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Site]
) -> None:
    cache = get_cache()
    total = sum(cache.purge_generated(str(site.pk)) for site in queryset)
    modeladmin.message_user(
        request,
        f"Purged {total} generated cache entries from {queryset.count()} site(s).",
        messages.SUCCESS,
    )
