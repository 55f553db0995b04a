from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "chatplatform.agents"
    label = "agents"
    verbose_name = "Human agents"
