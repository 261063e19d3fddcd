"""The hypervisor monitor: one watcher thread per host (lifecycle events in real time, a heartbeat and
reconcile), and the shared chores (stale jobs reaped, housekeeping) once per turn in the main loop.

A host that is dead, frozen or slow only ever holds its own watcher: the others keep handling their
events and reconciles (a change to a VM on a healthy host shows in a fraction of a second whatever
another host does). A watcher whose host fails backs off (2, 4, 8 ... s, at most the reconcile
interval) before it tries again; the gateway's connect deadline and keepalive bound each try.

Several monitors may run (several machines, on PostgreSQL): each host is watched by one of them, and one
of them, the leader, runs the chores, once per interval cluster-wide (PostgreSQL session advisory locks,
cluster.leadership). A monitor that dies releases its locks with its database session; the others take
its hosts, and the lead, on their next turn.

Run by `manage.py hypervisor_monitor` (its own process) or, for the single-process demo on libvirt's
test driver, in a thread of `manage.py runportal` (see there).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from django.db import close_old_connections

from portal.exceptions import PortalError
from portal.hypervisor import LifecycleEvent, get_driver
from portal.jobs import jobs_reap_stale

from .choices import HostStatus
from .housekeeping import housekeeping_run
from .leadership import CHORES, MonitorLocks, host_lock
from .models import Host
from .services import host_observe_event, host_sync

log = logging.getLogger("cluster.monitor")

BACKOFF_FIRST = 2.0  # seconds before the first retry of a host that failed; doubles up to the interval


def monitor_run(*, interval: float, should_stop: Callable[[], bool], once: bool = False) -> None:
    """Watch every enabled host until `should_stop()` is true (checked at least once a second)."""
    log.info("hypervisor monitor started: %d enabled host(s), reconcile every %s s",
             Host.objects.filter(enabled=True).count(), interval)
    if once:
        _run_once()
        close_old_connections()
        return
    monitor = _Monitor(interval)
    try:
        while not should_stop():
            try:
                monitor.turn()
            except Exception:  # the database hiccuped: say so, keep watching
                log.exception("hypervisor monitor turn failed; retrying in a second")
            time.sleep(1.0 if not should_stop() else 0)
    finally:
        monitor.stop()
        close_old_connections()


def _run_once() -> None:
    for host in Host.objects.filter(enabled=True):
        try:
            log.info("reconciled %s: %s", host.name, host_sync(host=host))
        except Exception:
            log.exception("reconcile of %s failed", host.name)
    chores_unless_led()


def chores_unless_led() -> dict[str, object] | None:
    """Run the chores now, unless a running monitor leads (it runs them every interval): None then."""
    locks = MonitorLocks()
    try:
        if not locks.acquire(CHORES):
            log.info("chores skipped: a running monitor leads and runs them")
            return None
        return _chores()
    finally:
        locks.close()


def _chores() -> dict[str, object]:
    """The shared periodic work: once per turn for all hosts, never per host (by the leader only)."""
    log.debug("running the chores")
    for job in jobs_reap_stale():
        log.warning("reaped stale job %s (%s): now %s", job.pk, job.kind, job.status)
    return housekeeping_run()


class _Monitor:
    """Keeps one `HostWatcher` per enabled host this monitor owns (started for new hosts, stopped for
    removed or disabled ones, restarted when a host's URI changes) and, while it leads, runs the chores
    every interval. Ownership and the lead are advisory locks (cluster.leadership), tried every turn:
    what another monitor held is taken over within a turn of its session ending."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.watchers: dict[int, HostWatcher] = {}
        self.next_chores = 0.0
        self.locks = MonitorLocks()
        self.leading: bool | None = None  # not known yet: the first turn says which

    def turn(self) -> None:
        close_old_connections()
        if not self.locks.check():  # the lock session died: nothing is ours any more
            self._stop_watchers()
        hosts = {h.pk: h for h in Host.objects.filter(enabled=True)}
        for pk, watcher in list(self.watchers.items()):
            host = hosts.get(pk)
            if host is None or host.uri != watcher.uri or not watcher.is_alive() or not self.locks.holds(host_lock(pk)):
                watcher.stop()
                del self.watchers[pk]
        for key in [k for k in self.locks.held if k != CHORES and k[1] not in hosts]:
            self.locks.release(key)  # removed or disabled: free for nobody in particular
        for pk, host in hosts.items():
            if pk not in self.watchers and self.locks.acquire(host_lock(pk)):
                self.watchers[pk] = HostWatcher(host, self.interval)
                self.watchers[pk].start()
        leading = self.locks.acquire(CHORES)
        if leading != self.leading:
            log.info("%s the chores (stale jobs, housekeeping) for the cluster",
                     "leading: this monitor runs" if leading else "another monitor leads and runs")
            self.leading = leading
            self.next_chores = 0.0
        if leading and time.monotonic() >= self.next_chores:
            _chores()
            self.next_chores = time.monotonic() + self.interval

    def _stop_watchers(self) -> None:
        for watcher in self.watchers.values():
            watcher.stop()
        for watcher in self.watchers.values():
            watcher.join(timeout=2.0)
        self.watchers.clear()

    def stop(self) -> None:
        self._stop_watchers()
        self.locks.close()


class HostWatcher(threading.Thread):
    """One host: its lifecycle events as they come, and a heartbeat + reconcile every interval
    (sooner, with backoff, while it fails). Nothing here waits on another host."""

    def __init__(self, host: Host, interval: float) -> None:
        super().__init__(name=f"monitor-{host.name}", daemon=True)
        self.host_id = host.pk
        self.host_name = host.name
        self.uri = host.uri
        self.interval = interval
        self.events: queue.Queue[LifecycleEvent | None] = queue.Queue()
        self.stopping = threading.Event()
        self.handle: int | None = None
        self.failures = 0

    def stop(self) -> None:
        self.stopping.set()
        self.events.put_nowait(None)

    def run(self) -> None:
        driver = get_driver(self.uri)
        try:
            # Registered once: the gateway registers the watch again on every new connection.
            self.handle = driver.register_lifecycle(self.events.put)
            log.info("watching lifecycle events of %s (%s)", self.host_name, self.uri)
        except PortalError as exc:
            log.warning("cannot watch %s yet: %s (watched once it answers)", self.host_name, exc.detail or exc.message)
        try:
            next_sync = 0.0
            while not self.stopping.is_set():
                if time.monotonic() >= next_sync:
                    next_sync = time.monotonic() + self._sync()
                try:
                    ev = self.events.get(timeout=max(0.05, min(1.0, next_sync - time.monotonic())))
                except queue.Empty:
                    continue
                if self.stopping.is_set() or ev is None:
                    break
                self._observe(ev)
        finally:
            if self.handle is not None:
                driver.unregister_lifecycle(self.handle)
            close_old_connections()

    def _sync(self) -> float:
        """Heartbeat and reconcile the host; seconds until the next one (backoff while it fails)."""
        try:
            close_old_connections()
            host = Host.objects.get(pk=self.host_id)
            result = host_sync(host=host)
        except Host.DoesNotExist:
            self.stopping.set()
            return self.interval
        except Exception:
            log.exception("reconcile of %s failed", self.host_name)
            result = {"status": "error"}
        if result.get("drifted"):
            log.info("reconciled %s: %s", self.host_name, result)
        if result.get("status") in HostStatus.REACHABLE:
            if self.failures:
                log.info("%s answers again after %d failed heartbeat(s)", self.host_name, self.failures)
            self.failures = 0
            return self.interval
        self.failures += 1
        delay = min(self.interval, BACKOFF_FIRST * 2 ** min(self.failures - 1, 10))
        log.warning("%s: %s; next try in %.0f s", self.host_name, result.get("error") or result.get("status"), delay)
        return delay

    def _observe(self, ev: LifecycleEvent) -> None:
        try:
            host_observe_event(host=Host.objects.get(pk=self.host_id), uuid=ev.uuid)
        except Exception:
            log.exception("handling event %s on %s failed", ev, self.host_name)
