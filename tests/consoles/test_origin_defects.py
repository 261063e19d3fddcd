"""The console Origin check compares scheme, host and port (default ports normalised), in both relays."""

from __future__ import annotations

from http.client import HTTPMessage

import pytest
from asgiref.sync import sync_to_async

from consoles.models import ConsoleTicket
from consoles.proxy import PortalProxyHandler, TicketTokenPlugin
from consoles.services import console_origin_allowed, console_request_scheme

from .conftest import communicator, refused

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("close_thread_connections")]


@pytest.mark.parametrize(("origin", "host", "scheme", "allowed"), [
    ("https://127.0.0.1:8001", "127.0.0.1:8001", "ws", False),  # an https page against an http portal
    ("http://127.0.0.1:8001", "127.0.0.1:8001", "ws", True),
    ("http://127.0.0.1:8001", "127.0.0.1:8001", "wss", False),  # an http page against an https portal
    ("https://portal.test", "portal.test", "wss", True),
    ("https://portal.test:443", "portal.test", "wss", True),  # default ports are the same origin
    ("http://portal.test", "portal.test:80", "http", True),
    ("HTTP://Portal.Test/", "portal.test", "ws", True),
    ("http://portal.test:443", "portal.test", "wss", False),
    ("http://[::1]:8001", "[::1]:8001", "ws", True),
    ("http://portal.test:notaport", "portal.test", "ws", False),
    ("http://user@portal.test", "portal.test", "ws", False),
    ("http://portal.test", "portal.test", None, False),
])
def test_same_origin_means_same_scheme_host_and_port(origin, host, scheme, allowed):
    assert console_origin_allowed(origin=origin, host=host, scheme=scheme) is allowed


def test_configured_origins_compare_with_default_ports_and_scheme(settings):
    settings.CONSOLE_ALLOWED_ORIGINS = ["https://portal.example.org"]
    assert console_origin_allowed(origin="https://portal.example.org:443", host="proxy:6090", scheme="ws")
    assert not console_origin_allowed(origin="http://portal.example.org", host="proxy:6090", scheme="ws")


def test_the_request_scheme_trusts_the_proxy_header_only_when_configured(settings):
    headers = {"x-forwarded-proto": "https"}
    settings.SECURE_PROXY_SSL_HEADER = None
    assert console_request_scheme(transport_scheme=None, headers=headers) == "http"
    assert console_request_scheme(transport_scheme="wss", headers={}) == "https"
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert console_request_scheme(transport_scheme=None, headers=headers) == "https"
    assert console_request_scheme(transport_scheme="ws", headers={"x-forwarded-proto": "http"}) == "http"


@pytest.fixture
def vm(test_host, alice):
    from vms.services import vm_create

    made = vm_create(actor=alice, via="web", name="web1", vcpus=1, memory_mib=128, disk_gib=1).vm
    made.refresh_from_db()
    return made


async def test_channels_relay_refuses_an_https_origin_on_an_http_portal(vm, alice, session_for, make_ticket):
    key = await sync_to_async(session_for)(alice)
    token = await sync_to_async(make_ticket)(alice, vm, key)
    comm = communicator(f"/ws/consoles/vm/{vm.pk}/screen/?ticket={token}", session_key=key,
                        origin="https://127.0.0.1:8001", host="127.0.0.1:8001")
    code, reason = await refused(comm)
    assert (code, reason) == (4403, "Origin 'https://127.0.0.1:8001' may not open consoles.")
    assert await ConsoleTicket.objects.filter(used_at__isnull=True).acount() == 1, "refused before the ticket"


def _proxy_handler(path: str, *, origin: str, host: str, session_key: str, tls: bool) -> PortalProxyHandler:
    """A websockify handler with a parsed request, without a socket (only _context is used)."""
    handler = PortalProxyHandler.__new__(PortalProxyHandler)
    handler.path = path
    handler.headers = HTTPMessage()
    handler.headers["Origin"] = origin
    handler.headers["Host"] = host
    handler.headers["Cookie"] = f"sessionid={session_key}"
    handler.client_address = ("127.0.0.1", 50000, tls)
    return handler


def test_websockify_tier_compares_the_scheme_too(vm, alice, session_for, make_ticket):
    key = session_for(alice)
    token = make_ticket(alice, vm, key)
    path = f"/vm/{vm.pk}/screen/?ticket={token}"
    handler = _proxy_handler(path, origin="https://proxy.test:6090", host="proxy.test:6090", session_key=key,
                             tls=False)
    _, ctx = handler._context()
    assert ctx["scheme"] == "http"
    plugin = TicketTokenPlugin(None)
    plugin.context = ctx
    assert plugin.lookup(token) is None
    assert plugin.error.code == "console_forbidden"
    assert plugin.error.message == "Origin 'https://proxy.test:6090' may not open consoles."
    assert ConsoleTicket.objects.filter(used_at__isnull=True).count() == 1

    # The same Origin over TLS (wss://) is the proxy's own: the Origin passes and the ticket is spent.
    handler = _proxy_handler(path, origin="https://proxy.test:6090", host="proxy.test:6090", session_key=key,
                             tls=True)
    _, ctx = handler._context()
    assert ctx["scheme"] == "https"
    plugin.context = ctx
    assert plugin.lookup(token) is None
    assert "Origin" not in plugin.error.message
    assert ConsoleTicket.objects.filter(used_at__isnull=True).count() == 0
