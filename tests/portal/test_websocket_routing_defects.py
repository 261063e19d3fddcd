"""A websocket upgrade to a path without a route is refused at the handshake, never a 500."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

pytestmark = [pytest.mark.django_db(transaction=True)]


def _communicator(path: str, *, session_key: str | None = None) -> WebsocketCommunicator:
    """A websocket to the real application of portal.asgi (Origin validator, sessions, auth, routing)."""
    from portal.asgi import application

    headers = [(b"host", b"testserver"), (b"origin", b"http://testserver")]
    if session_key:
        headers.append((b"cookie", f"sessionid={session_key}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)


@pytest.mark.parametrize("path", ["/ws/nope/", "/api/vms/", "/", "/ws/consoles/vm/abc/screen/",
                                  "/ws/consoles/vm/1/screen/extra/"])
async def test_unrouted_websocket_paths_are_refused_without_signing_in(path):
    comm = _communicator(path)
    connected, code = await comm.connect(timeout=5)  # raised ValueError("No route found ...") before
    assert connected is False
    assert code == 1000, "closed before accept: the server answers the upgrade with 403"


async def test_unrouted_paths_are_refused_for_signed_in_users_too(alice):
    from asgiref.sync import sync_to_async

    @sync_to_async
    def session() -> str:
        client = Client()
        client.force_login(alice)
        return client.cookies["sessionid"].value

    comm = _communicator("/ws/nope/", session_key=await session())
    connected, _ = await comm.connect(timeout=5)
    assert connected is False


async def test_known_routes_still_route():
    """The catch-all comes last: /ws/updates/ still reaches its own consumer (its own close code)."""
    from vms.consumers import CLOSE_UNAUTHENTICATED

    comm = _communicator("/ws/updates/")
    connected, code = await comm.connect(timeout=5)
    assert (connected, code) == (False, CLOSE_UNAUTHENTICATED)
