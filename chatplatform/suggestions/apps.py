from django.apps import AppConfig


class SuggestionsConfig(AppConfig):
    name = "chatplatform.suggestions"
    verbose_name = "Did you mean"
    default_auto_field = "django.db.models.BigAutoField"
