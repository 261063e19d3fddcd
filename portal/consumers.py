"""Websocket consumers of the core: the catch-all that refuses upgrades to paths nobody serves."""

from __future__ import annotations

from channels.generic.websocket import AsyncWebsocketConsumer


class NoRouteConsumer(AsyncWebsocketConsumer):
    """A websocket to a path without a route: the handshake is refused (HTTP 403), never a 500."""

    async def connect(self) -> None:
        await self.close()  # before accept: the server answers the upgrade with 403
