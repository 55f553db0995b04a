"""`/favicon.ico`: browsers ask for it on every page; without it each page view logged a 404."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import cache_control

# A chat bubble; SVG is accepted at /favicon.ico by current browsers.
FAVICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">'
    '<path fill="#2b6cb0" d="M8 10h48a6 6 0 0 1 6 6v26a6 6 0 0 1-6 6H26l-12 10v-10H8a6 6 0 0 '
    '1-6-6V16a6 6 0 0 1 6-6z"/>'
    '<circle cx="20" cy="29" r="4" fill="#fff"/><circle cx="32" cy="29" r="4" fill="#fff"/>'
    '<circle cx="44" cy="29" r="4" fill="#fff"/></svg>'
)


@cache_control(max_age=86400, public=True)
def favicon(request: HttpRequest) -> HttpResponse:
    return HttpResponse(FAVICON_SVG, content_type="image/svg+xml")
