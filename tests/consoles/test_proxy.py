"""The websockify tier (manage.py console_proxy): same tickets, same checks, same close codes.

The proxy's handler runs here in a thread of the test process (websockify's run-once path), so it
shares the test database; `manage.py console_proxy` forks the same handler per connection.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from contextlib import contextmanager

import pytest
from asgiref.sync import sync_to_async

from consoles.models import ConsoleSession
from portal.models import AuditEvent

from .conftest import ORIGIN, ws_client, ws_close_code
from .test_relay import _create_vm, _ticket

pytestmark = [pytest.mark.qemu, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("close_thread_connections")]


@contextmanager
def console_proxy():
    """ws://127.0.0.1:<port> served by consoles.proxy.PortalProxyHandler in background threads."""
    from websockify.websocketproxy import WebSocketProxy

    from consoles.proxy import PortalProxyHandler, TicketTokenPlugin

    server = WebSocketProxy(RequestHandlerClass=PortalProxyHandler, listen_host="127.0.0.1", listen_port=0,
                            token_plugin=TicketTokenPlugin(None), cert="/nonexistent/none.pem", run_once=True,
                            file_only=True)
    lsock = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def handle(sock, addr):
        try:
            server.top_new_client(sock, addr)
        finally:
            sock.close()

    def serve():
        while not stop.is_set():
            if select.select([lsock], [], [], 0.1)[0]:
                sock, addr = lsock.accept()
                threading.Thread(target=handle, args=(sock, addr), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"ws://127.0.0.1:{lsock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(2)
        lsock.close()


async def _recv(ws, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        buf += await ws.recv()
    return buf


async def test_proxy_tier_refuses_like_the_portal_and_relays_vnc(firmware_image, alice, bob, session_for, settings):
    settings.CONSOLE_POLL_SECONDS = 0.5
    settings.CONSOLE_ALLOWED_ORIGINS = [ORIGIN]  # the portal's origin, as on a separate proxy machine
    vm = await sync_to_async(_create_vm)(alice, firmware_image, "proxy-test")
    key = await sync_to_async(session_for)(alice)
    bob_key = await sync_to_async(session_for)(bob)
    with console_proxy() as base:
        url = f"{base}/vm/{vm.pk}/screen/"
        # Refusals: the same codes and reasons as the Channels relay.
        async with ws_client(url, session_key=key, origin=ORIGIN) as ws:
            assert await ws_close_code(ws) == (4401, "No console ticket: open the console from the VM's page.")
        async with ws_client(url + "?ticket=nope", session_key=key, origin=ORIGIN) as ws:
            assert await ws_close_code(ws) == (4401, "Unknown console ticket.")
        token = await sync_to_async(_ticket)(alice, vm, key)
        async with ws_client(f"{url}?ticket={token}", session_key=key, origin="http://evil.example") as ws:
            assert await ws_close_code(ws) == (4403, "Origin 'http://evil.example' may not open consoles.")
        async with ws_client(f"{url}?ticket={token}", session_key=bob_key, origin=ORIGIN) as ws:
            assert await ws_close_code(ws) == (4403, "This ticket was issued to another browser session.")
        async with ws_client(f"{base}/vm/{vm.pk + 1}/screen/?ticket={token}", session_key=key, origin=ORIGIN) as ws:
            assert await ws_close_code(ws) == (4403, "This ticket is for another console.")
        async with ws_client(f"{base}/elsewhere?ticket={token}", session_key=key, origin=ORIGIN) as ws:
            assert (await ws_close_code(ws))[0] == 4400

        # The real thing: RFB through the proxy, the relay answering the VNC password challenge.
        async with ws_client(f"{url}?ticket={token}", session_key=key, origin=ORIGIN) as ws:
            assert ws.subprotocol == "binary"
            assert await _recv(ws, 12) == b"RFB 003.008\n"
            await ws.send(b"RFB 003.008\n")
            assert await _recv(ws, 2) == b"\x01\x01"
            await ws.send(b"\x01")
            assert await _recv(ws, 4) == b"\0\0\0\0"
            await ws.send(b"\x01")
            head = await _recv(ws, 24)
            width, height = struct.unpack(">HH", head[:4])
            assert width > 0 and height > 0
            await ws.send(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))
            data = head[24:]
            while len(data) < 4 + struct.unpack(">I", head[20:24])[0]:
                data += await ws.recv()
            # Reused ticket while the first use is still open: 4409.
            async with ws_client(f"{url}?ticket={token}", session_key=key, origin=ORIGIN) as again:
                assert (await ws_close_code(again))[0] == 4409
            # Garbage closes with 4400, like the Channels relay.
            await ws.send(b"\x63garbage!")
            assert await ws_close_code(ws) == (4400, "Bad frame: unknown RFB client message type 99.")

        # A stopped VM is refused with 4410.
        from vms.services import vm_force_off

        token = await sync_to_async(_ticket)(alice, vm, key)
        await sync_to_async(vm_force_off)(actor=alice, via="web", vm=vm)
        async with ws_client(f"{url}?ticket={token}", session_key=key, origin=ORIGIN) as ws:
            assert (await ws_close_code(ws))[0] == 4410

    session = await ConsoleSession.objects.aget(user=alice, tier="websockify")
    assert session.closed_at is not None and session.close_code == 4400 and session.bytes_from_guest > 0
    close = await AuditEvent.objects.filter(action="console.close").afirst()
    assert close.data["tier"] == "websockify" and close.data["duration_seconds"] > 0
