"""Websocket routes of every app."""

from django.urls import path

from vms.consumers import UpdatesConsumer

websocket_urlpatterns = [
    path("ws/updates/", UpdatesConsumer.as_asgi()),
]
