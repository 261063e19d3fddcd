"""The hypervisor monitor loop: lifecycle events in real time, a periodic reconcile, stale jobs reaped.

Run by `manage.py hypervisor_monitor` (its own process) or, for the single-process demo on libvirt's
test driver, in a thread of `manage.py runportal` (see there).
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable

from django.db import close_old_connections

from portal.exceptions import PortalError
from portal.hypervisor import LifecycleEvent, get_driver
from portal.jobs import jobs_reap_stale

from .housekeeping import housekeeping_run
from .models import Host
from .services import host_observe_event, host_sync

log = logging.getLogger("cluster.monitor")


def monitor_run(*, interval: float, should_stop: Callable[[], bool], once: bool = False) -> None:
    """Watch every enabled host until `should_stop()` is true (checked at least once a second)."""
    monitor = _Monitor(interval)
    log.info("hypervisor monitor started: %d enabled host(s), reconcile every %s s",
             Host.objects.filter(enabled=True).count(), interval)
    while not should_stop():
        try:
            synced = monitor.turn()
        except Exception:  # the database or a host hiccuped: say so, keep watching
            log.exception("hypervisor monitor turn failed; retrying in a second")
            time.sleep(1.0)
            continue
        if once and synced:
            break
    close_old_connections()


class _Monitor:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.events: queue.Queue[tuple[int, LifecycleEvent]] = queue.Queue()
        self.registered: set[str] = set()
        self.next_sync = 0.0

    def turn(self) -> bool:
        """(Re)watch hosts, reconcile when due, handle at most one event; True when it reconciled."""
        close_old_connections()
        hosts = list(Host.objects.filter(enabled=True))
        for host in hosts:
            if host.uri in self.registered and get_driver(host.uri).is_alive():
                continue
            try:
                get_driver(host.uri).register_lifecycle(lambda ev, host_id=host.pk: self.events.put((host_id, ev)))
                self.registered.add(host.uri)
                log.info("watching lifecycle events of %s (%s)", host.name, host.uri)
            except PortalError as exc:
                self.registered.discard(host.uri)
                log.warning("cannot watch %s: %s", host.name, exc.detail or exc.message)
        synced = False
        if time.monotonic() >= self.next_sync:
            for host in hosts:
                try:
                    result = host_sync(host=host)
                    if result.get("drifted"):
                        log.info("reconciled %s: %s", host.name, result)
                except Exception:
                    log.exception("reconcile of %s failed", host.name)
            for job in jobs_reap_stale():
                log.warning("reaped stale job %s (%s): now %s", job.pk, job.kind, job.status)
            housekeeping_run()
            self.next_sync = time.monotonic() + self.interval
            synced = True
        try:
            host_id, ev = self.events.get(timeout=1.0)
        except queue.Empty:
            return synced
        try:
            host_observe_event(host=Host.objects.get(pk=host_id), uuid=ev.uuid)
        except Exception:
            log.exception("handling event %s failed", ev)
        return synced
