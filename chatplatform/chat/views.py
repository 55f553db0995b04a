"""The demo shop page: a fake online shop with the chat widget embedded by its one script tag."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.templatetags.static import static

from chatplatform.faq.demo_data import DEMO_SITE_NAME
from chatplatform.tenants.models import Site


def demo_shop(request: HttpRequest) -> HttpResponse:
    """The demo site's page (created by `manage.py load_demo_site`), else the first active site."""
    site = (
        Site.objects.filter(name=DEMO_SITE_NAME, is_active=True).first()
        or Site.objects.filter(is_active=True).order_by("id").first()
    )
    context = {
        "site": site,
        "widget_src": request.build_absolute_uri(static("widget.js")),
        "demo_model": settings.DEMO_MODEL,
    }
    return render(request, "chat/demo_shop.html", context, status=200 if site else 503)
