"""The websockify tier: the same one-time tickets and checks as the Channels relay, on its own port.

`manage.py console_proxy` runs websockify's forking server with `PortalProxyHandler`; each browser
connection is handled in its own process, which:

1. accepts the websocket (so a refusal reaches the page as a close code with a reason),
2. redeems the ticket through `TicketTokenPlugin.lookup` (consoles.services.console_ticket_redeem:
   Origin, session cookie, single use, expiry, VM match, access, VM running), which returns the
   VNC host and port from libvirt's live XML of the ticket's VM,
3. answers QEMU's VNC password challenge and offers the browser "no authentication" (consoles.rfb),
4. relays bytes, framing the browser's messages (view-only drops input, garbage closes with 4400),
   and re-checks the session every CONSOLE_POLL_SECONDS.

The listening (parent) process never touches the database or libvirt, so nothing is shared across
the fork; every child opens its own connections.
"""

from __future__ import annotations

import copy
import logging
import re
import select
import socket
import time
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.db import connections
from websockify.websocketproxy import ProxyRequestHandler

from portal.exceptions import PortalError
from portal.net import client_label

from .choices import ConsoleKind, ConsoleTier
from .exceptions import BadFrame, SessionEnded, TicketMissing, close_for
from .rfb import ClientStream, HandshakeFailed, ServerHandshake
from .services import (
    END_REASON_WAIT_SECONDS,
    ENDED_MESSAGE,
    ConsoleGrant,
    console_request_scheme,
    console_session_check,
    console_session_close,
    console_session_end_reason,
    console_ticket_redeem,
)

log = logging.getLogger(__name__)

PATH_RE = re.compile(r"^/vm/(?P<vm_id>\d+)/screen/?$")
CONNECT_TIMEOUT = 5.0
HANDSHAKE_TIMEOUT = 10.0


class TicketTokenPlugin:
    """websockify token plugin: a portal console ticket -> (VNC host, port) of the ticket's VM.

    `lookup(token)` redeems the ticket (it is single-use) with the connection's context, which
    PortalProxyHandler sets first; without that context (a stock `websockify --token-plugin`), the
    Origin and session checks fail and every token is refused.
    """

    def __init__(self, source: str | None = None) -> None:
        self.source = source
        self.context: dict = {}
        self.grant: ConsoleGrant | None = None
        self.error: PortalError | None = None

    def lookup(self, token: str) -> tuple[str, int] | None:
        ctx = self.context
        self.grant = self.error = None
        try:
            self.grant = console_ticket_redeem(
                token=token, vm_id=ctx.get("vm_id", ""), kind=ConsoleKind.SCREEN,
                session_key=ctx.get("session_key"), origin=ctx.get("origin"), host=ctx.get("host"),
                scheme=ctx.get("scheme"), tier=ConsoleTier.WEBSOCKIFY, client=ctx.get("client", ""))
        except PortalError as exc:
            self.error = exc
            return None
        return self.grant.target_host, self.grant.target_port


class PortalProxyHandler(ProxyRequestHandler):
    """One browser connection (in its own process): redeem, authenticate to VNC, relay, re-check."""

    def validate_connection(self) -> None:
        # Tickets are redeemed after the upgrade, in new_websocket_client, so that a refusal is a
        # websocket close code with a reason instead of a dropped TCP connection.
        return

    def _context(self) -> tuple[str | None, dict]:
        parts = urlsplit(self.path)
        match = PATH_RE.match(parts.path)
        token = (parse_qs(parts.query).get("ticket") or [None])[0]
        cookie = SimpleCookie()
        try:
            cookie.load(self.headers.get("Cookie", ""))
        except Exception:  # a malformed cookie header is just no session
            pass
        morsel = cookie.get(settings.SESSION_COOKIE_NAME)
        # websockify marks TLS connections with a third element in client_address (see do_handshake).
        tls = len(self.client_address or ()) > 2 and bool(self.client_address[2])
        headers = {k.lower(): v for k, v in self.headers.items()}
        return token, {
            "vm_id": match.group("vm_id") if match else None,
            "session_key": morsel.value if morsel else None,
            "origin": self.headers.get("Origin"),
            "host": self.headers.get("Host"),
            "scheme": console_request_scheme(transport_scheme="wss" if tls else "ws", headers=headers),
            "client": client_label(peer=self.client_address[:2] if self.client_address else None,
                                   forwarded_for=self.headers.get("X-Forwarded-For")),
        }

    def new_websocket_client(self) -> None:
        self.grant = None
        self.bytes_to_guest = self.bytes_from_guest = 0
        code, reason = 1000, ""
        try:
            try:
                self._run()
            except self.CClose as exc:
                code, reason = exc.args[0], exc.args[1]
                raise
            except PortalError as exc:
                code, reason = close_for(exc)
                raise self.CClose(code, reason) from None
            except TimeoutError:
                code, reason = close_for(HandshakeFailed("The console is unavailable: the VM's display did not answer."))
                raise self.CClose(code, reason) from None
            except OSError:
                code, reason = close_for(HandshakeFailed("The console is unavailable: could not reach the VM's display."))
                raise self.CClose(code, reason) from None
        finally:
            if self.grant is not None:
                try:
                    console_session_close(session_id=self.grant.session_id, code=code, reason=reason,
                                          bytes_to_guest=self.bytes_to_guest, bytes_from_guest=self.bytes_from_guest)
                except Exception:
                    log.exception("could not record the end of console session %s", self.grant.session_id)
            connections.close_all()

    def _run(self) -> None:
        token, ctx = self._context()
        if ctx["vm_id"] is None:
            raise BadFrame("Bad request: console proxy paths look like /vm/<id>/screen/?ticket=...")
        # A copy per connection: the context and grant must never leak between connections (the
        # forking server gives each its own process anyway; a threaded harness would not).
        plugin: TicketTokenPlugin = copy.copy(self.server.token_plugin)
        plugin.context = ctx
        target = plugin.lookup(token or "")  # Origin first, then the ticket: same order as the portal
        if target is None:
            raise plugin.error or TicketMissing("No console ticket: open the console from the VM's page.")
        self.grant = grant = plugin.grant
        self.log_message("console session %s: %s -> VM %s", grant.session_id, grant.username, grant.vm_id)
        tsock = socket.create_connection(target, timeout=CONNECT_TIMEOUT)
        try:
            tsock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.request.setsockopt(socket.SOL_TCP, socket.TCP_NODELAY, 1)
            tsock.settimeout(HANDSHAKE_TIMEOUT)
            handshake = ServerHandshake(grant.vnc_password)
            while not handshake.done:
                data = tsock.recv(4096)
                if not data:
                    raise HandshakeFailed("The VM's display closed the connection during the handshake.")
                reply = handshake.feed(data)
                if reply:
                    tsock.sendall(reply)
            tsock.settimeout(None)
            stream = ClientStream(view_only=grant.read_only)
            first = [stream.greeting()]
            if handshake.leftover:
                first.append(handshake.leftover)
            self._relay(tsock, stream, first)
        finally:
            try:
                tsock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            tsock.close()

    def _end_reason(self) -> PortalError:
        """The VNC server closed: 4410 once the VM is seen stopped (QEMU closes before libvirt knows)."""
        deadline = time.monotonic() + END_REASON_WAIT_SECONDS
        while True:
            reason = console_session_end_reason(session_id=self.grant.session_id)
            if reason is not None:
                return reason
            if time.monotonic() >= deadline:
                return SessionEnded(ENDED_MESSAGE)
            time.sleep(0.25)

    def _relay(self, target: socket.socket, stream: ClientStream, cqueue: list[bytes]) -> None:
        """websockify's do_proxy loop, with RFB framing of the browser side and periodic re-checks."""
        tqueue: list[bytes] = []
        c_pend = False
        rlist = [self.request, target]
        interval = max(0.2, float(settings.CONSOLE_POLL_SECONDS))
        next_check = time.monotonic() + interval
        while True:
            now = time.monotonic()
            if now >= next_check:
                console_session_check(session_id=self.grant.session_id)  # raises the reason to stop
                next_check = now + interval
            wlist = []
            if tqueue:
                wlist.append(target)
            if cqueue or c_pend:
                wlist.append(self.request)
            ins, outs, _ = select.select(rlist, wlist, [], max(0.05, min(1.0, next_check - now)))
            if self.request in outs:
                c_pend = self.send_frames(cqueue)
                cqueue = []
            if self.request in ins:
                bufs, closed = self.recv_frames()
                for buf in bufs:
                    to_server, to_client = stream.feed(buf)  # BadFrame -> 4400
                    if to_server:
                        tqueue.append(to_server)
                    if to_client:
                        cqueue.append(to_client)
                if closed:
                    for data in tqueue:
                        try:
                            target.sendall(data)
                        except OSError:
                            break
                        self.bytes_to_guest += len(data)
                    raise self.CClose(closed["code"] or 1000, closed["reason"] or "closed by the browser")
            if target in outs and tqueue:
                data = tqueue.pop(0)
                try:
                    sent = target.send(data)
                except OSError:
                    raise self._end_reason() from None
                self.bytes_to_guest += sent
                if sent < len(data):
                    tqueue.insert(0, data[sent:])
            if target in ins:
                try:
                    buf = target.recv(self.buffer_size)
                except OSError:  # QEMU went away (reset): same as a clean end
                    buf = b""
                if not buf:
                    while cqueue or c_pend:
                        c_pend = self.send_frames(cqueue)
                        cqueue = []
                    raise self._end_reason()
                self.bytes_from_guest += len(buf)
                cqueue.append(buf)
