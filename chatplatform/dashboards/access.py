"""Which sites a user may read on the dashboard, and the view guard that enforces it."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from chatplatform.tenants.models import Site

LOGIN_URL = "admin:login"  # staff sign in through the admin's login page


def readable_sites(user) -> QuerySet[Site]:
    """Superusers read every site; other staff only the sites granted to them (SiteAccess)."""
    if user.is_superuser:
        return Site.objects.all()
    if not user.is_staff:
        return Site.objects.none()
    return Site.objects.filter(dashboard_access__user=user)


def staff_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Anonymous -> the login page; signed-in non-staff -> 403; staff -> the view."""

    @login_required(login_url=LOGIN_URL)
    @wraps(view)
    def guarded(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_staff:
            raise PermissionDenied("The dashboard is for staff users.")
        return view(request, *args, **kwargs)

    return guarded
