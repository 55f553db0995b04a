from django.contrib import admin
from django.urls import include, path

from chatplatform.dashboards.metrics_view import metrics
from chatplatform.favicon import favicon
from chatplatform.health.views import healthz, livez, readyz

# The admin's index also links the dashboard and the cache pages (they are not models).
admin.site.index_template = "dashboards/admin_index.html"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("favicon.ico", favicon, name="favicon"),
    path("healthz", healthz, name="healthz"),
    path("livez", livez, name="livez"),  # answered by ProbeMiddleware first, for any Host
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    path("dashboard/", include("chatplatform.dashboards.urls")),
    path("cache/", include("chatplatform.semanticcache.urls")),
    path("agents/", include("chatplatform.agents.urls")),
    path("", include("chatplatform.chat.urls")),
]
