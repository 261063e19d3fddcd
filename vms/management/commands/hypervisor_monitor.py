"""Keep the portal true to libvirt: lifecycle events in real time, a periodic reconcile, stale jobs reaped."""

from __future__ import annotations

import logging
import queue
import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from portal.exceptions import PortalError
from portal.hypervisor import LifecycleEvent, get_driver
from portal.jobs import jobs_reap_stale
from vms.hosts import host_sync, vm_observe_event
from vms.models import Host

log = logging.getLogger("vms.monitor")


class Command(BaseCommand):
    help = "Watch every host's lifecycle events and reconcile VM states periodically."

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=settings.RECONCILE_SECONDS,
                            help="Seconds between full reconciles (default %(default)s).")
        parser.add_argument("--once", action="store_true", help="Reconcile once and exit.")

    def handle(self, *args, interval: float, once: bool, **options):
        events: queue.Queue[tuple[int, LifecycleEvent]] = queue.Queue()
        registered: set[str] = set()
        stop = {"flag": False}

        def on_signal(*_):
            stop["flag"] = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        next_sync = 0.0
        while not stop["flag"]:
            close_old_connections()
            hosts = list(Host.objects.filter(enabled=True))
            for host in hosts:
                if host.uri in registered and get_driver(host.uri).is_alive():
                    continue
                try:
                    get_driver(host.uri).register_lifecycle(
                        lambda ev, host_id=host.pk: events.put((host_id, ev)))
                    registered.add(host.uri)
                    log.info("watching lifecycle events of %s (%s)", host.name, host.uri)
                except PortalError as exc:
                    registered.discard(host.uri)
                    log.warning("cannot watch %s: %s", host.name, exc.message)
            if time.monotonic() >= next_sync:
                for host in hosts:
                    try:
                        result = host_sync(host=host)
                        if result.get("drifted"):
                            log.info("reconciled %s: %s", host.name, result)
                    except Exception:
                        log.exception("reconcile of %s failed", host.name)
                for job in jobs_reap_stale():
                    log.warning("reaped stale job %s (%s): now %s", job.pk, job.kind, job.status)
                next_sync = time.monotonic() + interval
                if once:
                    return
            try:
                host_id, ev = events.get(timeout=1.0)
            except queue.Empty:
                continue
            try:
                host = Host.objects.get(pk=host_id)
                vm_observe_event(host=host, uuid=ev.uuid, state=None if ev.event == "undefined" else ev.state)
            except Exception:
                log.exception("handling event %s failed", ev)
