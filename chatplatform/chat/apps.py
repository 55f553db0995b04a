from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chatplatform.chat"
    label = "chat"
