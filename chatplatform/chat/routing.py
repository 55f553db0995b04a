"""Websocket routes: the customers' endpoint for every site (the site is named in the hello
frame) and the agents' inbox endpoint.

Imported by the ASGI application only, so it is also where a server process starts loading the
semantic cache in the background, before its first customer asks.
"""

from channels.auth import AuthMiddlewareStack
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from chatplatform.chat.answering import warm_up_in_background
from chatplatform.chat.consumers import ChatConsumer
from chatplatform.chat.consumers.agent import AgentConsumer

websocket_urlpatterns = [
    # Customers: origins are checked per site, in the consumer (each site lists its own).
    path("ws/chat/", ChatConsumer.as_asgi()),
    # Agents: signed in through the session cookie, so the page must be this platform's own
    # (a foreign page could otherwise open the socket with the agent's cookie).
    path(
        "ws/agent/",
        AllowedHostsOriginValidator(AuthMiddlewareStack(AgentConsumer.as_asgi())),
    ),
]
warm_up_in_background()
