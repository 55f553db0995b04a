"""WSGI entry point (admin and dashboards only; chat needs the ASGI app)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatplatform.settings.local")
application = get_wsgi_application()
