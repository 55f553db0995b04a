from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    name = "chatplatform.conversations"
    label = "conversations"
