"""Django wiring of the semantic cache (cache/ itself is plain Python)."""

from django.apps import AppConfig


class SemanticcacheConfig(AppConfig):
    name = "chatplatform.semanticcache"
    label = "semanticcache"
    verbose_name = "Semantic cache"

    def ready(self) -> None:
        from django.contrib import admin

        from chatplatform.semanticcache import signals  # noqa: F401 - connects the receivers
        from chatplatform.semanticcache.admin_actions import purge_generated_cache_entries
        from chatplatform.tenants.models import Site

        site_admin = admin.site._registry.get(Site)
        if site_admin is not None and purge_generated_cache_entries not in site_admin.actions:
            site_admin.actions = [*site_admin.actions, purge_generated_cache_entries]
