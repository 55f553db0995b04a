"""Websocket routes: one endpoint for every site (the site is named in the hello frame).

Imported by the ASGI application only, so it is also where a server process starts loading the
semantic cache in the background, before its first customer asks.
"""

from django.urls import path

from chatplatform.chat.answering import warm_up_in_background
from chatplatform.chat.consumers import ChatConsumer

websocket_urlpatterns = [path("ws/chat/", ChatConsumer.as_asgi())]
warm_up_in_background()
