from django.apps import AppConfig


class SemanticcacheConfig(AppConfig):
    name = "chatplatform.semanticcache"
    label = "semanticcache"
