from django.urls import path

from chatplatform.semanticcache import views

app_name = "semanticcache"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("sites/<int:site_id>/generated/", views.generated, name="generated"),
    path("sites/<int:site_id>/flagged/", views.flagged, name="flagged"),
    path("sites/<int:site_id>/near-misses/", views.near_misses, name="near_misses"),
    path(
        "sites/<int:site_id>/near-misses/action/",
        views.near_miss_action,
        name="near_miss_action",
    ),
    path(
        "sites/<int:site_id>/confirmed/action/",
        views.confirmed_action,
        name="confirmed_action",
    ),
    path("entries/action/", views.entry_action, name="entry_action"),
]
