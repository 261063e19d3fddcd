"""Websocket routes of every app."""

from django.urls import path, re_path

from consoles.routing import websocket_urlpatterns as console_patterns
from portal.consumers import NoRouteConsumer
from vms.consumers import UpdatesConsumer

websocket_urlpatterns = [
    path("ws/updates/", UpdatesConsumer.as_asgi()),
    *console_patterns,
    # Last: any other path is refused at the handshake (without it, Channels answers 500 "No route found").
    re_path(r"", NoRouteConsumer.as_asgi()),
]
