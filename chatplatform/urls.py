from django.contrib import admin
from django.urls import include, path

from chatplatform.dashboards.metrics_view import metrics
from chatplatform.health.views import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("dashboard/", include("chatplatform.dashboards.urls")),
    path("cache/", include("chatplatform.semanticcache.urls")),
    path("agents/", include("chatplatform.agents.urls")),
    path("", include("chatplatform.chat.urls")),
]
