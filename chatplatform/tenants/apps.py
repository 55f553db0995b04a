from django.apps import AppConfig


class TenantsConfig(AppConfig):
    verbose_name = "Sites"
    name = "chatplatform.tenants"
    label = "tenants"
