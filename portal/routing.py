"""Websocket routes of every app."""

from django.urls import path

from consoles.routing import websocket_urlpatterns as console_patterns
from vms.consumers import UpdatesConsumer

websocket_urlpatterns = [
    path("ws/updates/", UpdatesConsumer.as_asgi()),
    *console_patterns,
]
