"""Keep the portal true to libvirt: lifecycle events in real time, a periodic reconcile, stale jobs reaped."""

from __future__ import annotations

import signal

from django.conf import settings
from django.core.management.base import BaseCommand

from cluster.monitor import monitor_run


class Command(BaseCommand):
    help = "Watch every host's lifecycle events and reconcile VM states periodically."

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=settings.RECONCILE_SECONDS,
                            help="Seconds between full reconciles (default %(default)s).")
        parser.add_argument("--once", action="store_true", help="Reconcile once and exit.")

    def handle(self, *args, interval: float, once: bool, **options):
        stop = {"flag": False}

        def on_signal(*_):
            stop["flag"] = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        monitor_run(interval=interval, should_stop=lambda: stop["flag"], once=once)
