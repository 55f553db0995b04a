from django.apps import AppConfig


class FaqConfig(AppConfig):
    verbose_name = "FAQ"
    name = "chatplatform.faq"
    label = "faq"
