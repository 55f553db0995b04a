"""manage.py rebuild_semantic_cache [--site ID ...]: the cache's FAQ entries from the database.

Repairs the cache after a Redis loss or an outage during FAQ edits: every active FAQ is
written again and entries of FAQs that no longer exist or are inactive are removed. Sites the
cache still holds but the database no longer has (a deleted site whose purge failed) are
purged: with --site, only those of the ids given.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from chatplatform.semanticcache.service import get_cache, rebuild_site
from chatplatform.tenants.models import Site


class Command(BaseCommand):
    help = "Rebuild the semantic cache's FAQ entries from the database; purge deleted sites."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--site", type=int, action="append", help="site id (repeatable)")

    def handle(self, *args: Any, **options: Any) -> None:
        sites = Site.objects.all()
        if options["site"]:
            sites = sites.filter(pk__in=options["site"])
        for site in sites:
            written = rebuild_site(site)
            self.stdout.write(f"site {site.pk} ({site.name}): {written} FAQ entries written")
        cache = get_cache()
        # Sites with entries, or only a threshold override, that no site row backs any more.
        cached = set(cache.store.site_ids()) | set(cache.store.policies())
        if options["site"]:
            cached &= {str(site_id) for site_id in options["site"]}
        existing = {str(pk) for pk in Site.objects.values_list("pk", flat=True)}
        for site_id in sorted(cached - existing):
            removed = cache.purge_site(site_id)
            self.stdout.write(
                f"site {site_id}: not in the database; purged ({removed} cache entries removed)"
            )
