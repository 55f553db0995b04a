"""The dashboard's "did you mean" figures: suggestions shown after cache misses, what customers
did with them, and the model time their clicks saved.

Counted live from `SuggestionOffer` rows (one per question shown suggestions,
chatplatform/suggestions/models.py) of questions that arrived in the scope's range. Definitions:

* click rate: suggestion sets with a chosen FAQ / suggestion sets shown.
* generations cancelled: chosen while the model's answer to the question was still running or
  queued, and stopped before it finished.
* GPU seconds saved: per cancelled generation, the site's recent mean GPU time of a finished
  model answer minus what the cancelled one used (an estimate: the answer might have ended
  sooner).
"""

from __future__ import annotations

from django.db.models import Count, Q, Sum

from chatplatform.dashboards.queries import Scope, Table, ratio
from chatplatform.suggestions.models import SuggestionOffer

SECONDS_PER_HOUR = 3600.0


def suggestion_table(scope: Scope, gpu_cost_per_hour: float) -> Table:
    table = Table(
        "suggestions", "Did you mean: suggestions after a cache miss", ["figure", "value"]
    )
    Outcome = SuggestionOffer.Outcome
    figures = SuggestionOffer.objects.filter(
        site_id__in=scope.site_ids, received_at__gte=scope.start, received_at__lt=scope.end
    ).aggregate(
        shown=Count("pk"),
        waiting_first=Count("pk", filter=Q(policy="suggest_first")),
        chosen=Count("pk", filter=Q(outcome=Outcome.CHOSEN)),
        declined=Count("pk", filter=Q(outcome=Outcome.DECLINED)),
        passed_over=Count("pk", filter=Q(outcome=Outcome.PASSED_OVER)),
        cancelled=Count("pk", filter=Q(model_cancelled=True)),
        saved=Sum("gpu_seconds_saved"),
    )
    saved = float(figures["saved"] or 0.0)
    table.rows = [
        ["questions shown suggestions", figures["shown"]],
        ["of which the model waited (suggest_first)", figures["waiting_first"]],
        ["answered by a click", figures["chosen"]],
        ["click rate", ratio(figures["chosen"], figures["shown"])],
        ['"none of these"', figures["declined"]],
        ["passed over by a new message", figures["passed_over"]],
        ["model generations cancelled by a click", figures["cancelled"]],
        ["GPU seconds saved by clicks", round(saved, 2)],
        ["GPU cost saved by clicks", round(saved / SECONDS_PER_HOUR * gpu_cost_per_hour, 4)],
    ]
    return table
