from django.apps import AppConfig


class HealthConfig(AppConfig):
    name = "chatplatform.health"
    label = "health"
