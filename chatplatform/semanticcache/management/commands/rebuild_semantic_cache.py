"""manage.py rebuild_semantic_cache [--site ID ...]: the cache's FAQ entries from the database.

Repairs the cache after a Redis loss or an outage during FAQ edits: every active FAQ is
written again and entries of FAQs that no longer exist or are inactive are removed.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from chatplatform.semanticcache.service import rebuild_site
from chatplatform.tenants.models import Site


class Command(BaseCommand):
    help = "Rebuild the semantic cache's FAQ entries from the database."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--site", type=int, action="append", help="site id (repeatable)")

    def handle(self, *args: Any, **options: Any) -> None:
        sites = Site.objects.all()
        if options["site"]:
            sites = sites.filter(pk__in=options["site"])
        for site in sites:
            written = rebuild_site(site)
            self.stdout.write(f"site {site.pk} ({site.name}): {written} FAQ entries written")
