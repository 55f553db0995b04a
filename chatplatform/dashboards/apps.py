from django.apps import AppConfig


class DashboardsConfig(AppConfig):
    name = "chatplatform.dashboards"
    label = "dashboards"
