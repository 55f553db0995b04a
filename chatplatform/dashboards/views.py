"""Dashboard pages: the overview with charts, CSV export of each table, and FAQ gaps.

Views are thin: the filter form gives a `Scope` limited to the user's readable sites, the
aggregates come from queries.py / gaps.py, and templates render them.
"""

from __future__ import annotations

import csv
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from chatplatform.dashboards import encoder
from chatplatform.dashboards.access import readable_sites, staff_only
from chatplatform.dashboards.forms import ScopeForm
from chatplatform.dashboards.gaps import MAX_MISSES, Gap, faq_gaps
from chatplatform.dashboards.queries import RATIO_COLUMNS, Scope, Table
from chatplatform.dashboards.report import build_dashboard

GAP_COLUMNS = ["site", "missed questions", "question", "other phrasings", "model answer"]


def display(value: Any, column: str) -> str:
    """A cell as the page shows it (CSV keeps raw values)."""
    if value is None:
        return "–"
    if column in RATIO_COLUMNS:
        return f"{value * 100:.1f}%"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table_context(table: Table) -> dict[str, Any]:
    rows = [
        [
            {"text": display(v, c), "sort": "" if v is None else v}
            for v, c in zip(row, table.columns, strict=True)
        ]
        for row in table.rows
    ]
    return {"name": table.name, "title": table.title, "columns": table.columns, "rows": rows}


def _scope_form(request: HttpRequest) -> ScopeForm:
    return ScopeForm(request.GET, readable_sites(request.user))


# A spreadsheet opening the CSV runs a cell that starts with one of these as a formula
# (`=HYPERLINK(...)`, `@SUM(...)`; tab and CR can hide the sign). Exports carry customer
# questions and model answers verbatim, so such text cells get a leading single quote, which
# spreadsheets read as "this is text" (OWASP's CSV-injection advice). Numbers stay numbers.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A value as written to a CSV export: empty for None, text never read as a formula."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return f"'{value}"
    return value


def _csv_response(filename: str, columns: list[str], rows: list[list[Any]]) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.writer(response)
    writer.writerow(columns)
    writer.writerows([csv_cell(v) for v in row] for row in rows)
    return response


def _range_label(scope: Scope) -> str:
    return f"{scope.days()[0]:%Y%m%d}-{scope.days()[-1]:%Y%m%d}"


@require_GET
@staff_only
def overview(request: HttpRequest) -> HttpResponse:
    form = _scope_form(request)
    if not form.is_valid():
        return render(request, "dashboards/overview.html", {"form": form}, status=400)
    scope = form.scope()
    dashboard = build_dashboard(scope, settings.GPU_COST_PER_HOUR)
    charts = {t.name: {"columns": t.columns, "rows": t.rows} for t in dashboard.tables()}
    context = {
        "form": form,
        "scope": scope,
        "has_sites": bool(scope.site_ids),
        "tables": [table_context(t) for t in dashboard.tables()],
        "charts": charts,
        "gpu_cost_per_hour": settings.GPU_COST_PER_HOUR,
        "query": request.GET.urlencode(),
    }
    return render(request, "dashboards/overview.html", context)


@require_GET
@staff_only
def export_csv(request: HttpRequest, name: str) -> HttpResponse:
    form = _scope_form(request)
    if not form.is_valid():
        return HttpResponse(form.errors.as_text(), status=400, content_type="text/plain")
    scope = form.scope()
    tables = {t.name: t for t in build_dashboard(scope, settings.GPU_COST_PER_HOUR).tables()}
    if name not in tables:
        raise Http404(f"No table named {name!r}.")
    table = tables[name]
    return _csv_response(f"{name}-{_range_label(scope)}.csv", table.columns, table.rows)


def _gap_rows(gaps: list[Gap], site_names: dict[int, str]) -> list[list[Any]]:
    return [
        [site_names[g.site_id], g.count, g.question, " | ".join(g.phrasings), g.answer]
        for g in gaps
    ]


@require_GET
@staff_only
def gaps(request: HttpRequest) -> HttpResponse:
    form = _scope_form(request)
    if not form.is_valid():
        return render(request, "dashboards/gaps.html", {"form": form}, status=400)
    scope = form.scope()
    found = faq_gaps(scope, encoder.encode) if scope.site_ids else []
    site_names = {site.pk: site.name for site in form.sites}
    context = {
        "form": form,
        "scope": scope,
        "has_sites": bool(scope.site_ids),
        "gaps": [{"gap": g, "site": site_names[g.site_id]} for g in found],
        "max_misses": MAX_MISSES,
        "query": request.GET.urlencode(),
    }
    return render(request, "dashboards/gaps.html", context)


@require_GET
@staff_only
def gaps_csv(request: HttpRequest) -> HttpResponse:
    form = _scope_form(request)
    if not form.is_valid():
        return HttpResponse(form.errors.as_text(), status=400, content_type="text/plain")
    scope = form.scope()
    found = faq_gaps(scope, encoder.encode) if scope.site_ids else []
    site_names = {site.pk: site.name for site in form.sites}
    return _csv_response(
        f"faq-gaps-{_range_label(scope)}.csv", GAP_COLUMNS, _gap_rows(found, site_names)
    )
