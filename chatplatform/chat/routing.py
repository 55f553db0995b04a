"""Websocket routes: one endpoint for every site (the site is named in the hello frame)."""

from django.urls import path

from chatplatform.chat.consumers import ChatConsumer

websocket_urlpatterns = [path("ws/chat/", ChatConsumer.as_asgi())]
