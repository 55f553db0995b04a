"""Websocket routes. The chat consumer registers here."""

websocket_urlpatterns: list = []
