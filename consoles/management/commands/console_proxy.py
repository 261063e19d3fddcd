"""manage.py console_proxy: the websockify console tier (same tickets, own port)."""

from __future__ import annotations

import logging

from django.core.management.base import BaseCommand, CommandError
from websockify.websocketproxy import WebSocketProxy

from consoles.proxy import PortalProxyHandler, TicketTokenPlugin


class Command(BaseCommand):
    help = ("Serve graphical consoles through websockify on their own port, redeeming the portal's one-time "
            "tickets. Point the pages at it with PORTAL_CONSOLE_PROXY_URL (e.g. ws://proxy.example:6090).")
    # The listening process must not open the database or libvirt: each connection runs in a forked
    # child that opens its own.
    requires_system_checks: list = []

    def add_arguments(self, parser) -> None:
        parser.add_argument("--listen", default="127.0.0.1:6090", help="host:port to listen on (default %(default)s)")
        parser.add_argument("--cert", default="", help="TLS certificate (PEM) to serve wss://")
        parser.add_argument("--key", default="", help="TLS key, if not in the certificate file")
        parser.add_argument("--heartbeat", type=int, default=30, help="ping browsers every N seconds (0: never)")
        parser.add_argument("--verbose-proxy", action="store_true", help="websockify's verbose logging")

    def handle(self, *args, **options) -> None:
        host, sep, port = options["listen"].rpartition(":")
        if not sep or not port.isdigit():
            raise CommandError("--listen must be host:port, e.g. 127.0.0.1:6090")
        host = host.strip("[]") or "127.0.0.1"
        logging.getLogger("websocket").setLevel(logging.DEBUG if options["verbose_proxy"] else logging.INFO)
        server = WebSocketProxy(
            RequestHandlerClass=PortalProxyHandler,
            listen_host=host,
            listen_port=int(port),
            token_plugin=TicketTokenPlugin(None),
            heartbeat=options["heartbeat"] or None,
            # No TLS unless a certificate is given (websockify would otherwise look for one in the cwd).
            cert=options["cert"] or "/nonexistent/console-proxy.pem",
            key=options["key"] or None,
            ssl_only=bool(options["cert"]),
            verbose=options["verbose_proxy"],
            file_only=True,
        )
        self.stdout.write(f"Console proxy (websockify) on ws://{host}:{port}/vm/<id>/screen/?ticket=...")
        self.stdout.flush()
        server.start_server()
