"""Compute the dashboard's daily rollups ahead of time, or recompute them after late edits.

python manage.py refresh_dashboard_rollups --days 90            # fill what is missing
python manage.py refresh_dashboard_rollups --days 30 --rebuild  # recount settled days
"""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandParser

from chatplatform.dashboards import rollups
from chatplatform.dashboards.queries import Scope
from chatplatform.tenants.models import Site


class Command(BaseCommand):
    help = "Fill (or with --rebuild recompute) the dashboard's rollups of settled days."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=90, help="how far back (default 90)")
        parser.add_argument("--rebuild", action="store_true", help="recount existing rollups")

    def handle(self, *args, days: int, rebuild: bool, **options) -> None:
        end = rollups.midnight(rollups.first_live_day())
        scope = Scope(list(Site.objects.values_list("pk", flat=True)), end - timedelta(days), end)
        if not scope.site_ids or days < 1:
            self.stdout.write("nothing to do")
            return
        computed = rollups.rebuild(scope) if rebuild else rollups.ensure(scope)
        self.stdout.write(f"{computed} site-days computed")
