"""Console websocket routes (included by portal.routing)."""

from django.urls import path

from .consumers import ScreenConsumer, SerialConsumer

websocket_urlpatterns = [
    path("ws/consoles/vm/<int:vm_id>/screen/", ScreenConsumer.as_asgi()),
    path("ws/consoles/vm/<int:vm_id>/serial/", SerialConsumer.as_asgi()),
]
