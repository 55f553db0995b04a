"""The dashboard's filter: one of the user's sites (or all of them) and an inclusive date range."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from django import forms
from django.db.models import QuerySet
from django.utils import timezone

from chatplatform.dashboards.queries import Scope
from chatplatform.tenants.models import Site

DEFAULT_DAYS = 30
# A year of daily rows is what the charts can show legibly, and it bounds query cost.
MAX_DAYS = 366


class ScopeForm(forms.Form):
    site = forms.TypedChoiceField(required=False, coerce=int, empty_value=None)
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="inclusive",
    )

    def __init__(self, data, sites: QuerySet[Site]) -> None:
        super().__init__(data)
        self.sites = list(sites)
        self.fields["site"].choices = [("", "all my sites")] + [
            (site.pk, site.name) for site in self.sites
        ]

    def clean(self) -> dict:
        cleaned = super().clean()
        end: date = cleaned.get("end") or timezone.now().date()
        start: date = cleaned.get("start") or end - timedelta(days=DEFAULT_DAYS - 1)
        if start > end:
            raise forms.ValidationError("The start date is after the end date.", code="range")
        if (end - start).days + 1 > MAX_DAYS:
            raise forms.ValidationError(f"Choose at most {MAX_DAYS} days.", code="range_too_long")
        cleaned["start"], cleaned["end"] = start, end
        return cleaned

    def scope(self) -> Scope:
        """The validated scope; call after is_valid()."""
        site = self.cleaned_data.get("site")
        site_ids = [site] if site is not None else [s.pk for s in self.sites]
        start, end = self.cleaned_data["start"], self.cleaned_data["end"]
        return Scope(
            site_ids=site_ids,
            start=datetime.combine(start, time.min, tzinfo=UTC),
            end=datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC),
        )
