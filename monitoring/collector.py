"""The collector: turns a host's counters into samples (issue #14 part 2).

The monitor reconciles each host with one getAllDomainStats call (cluster.services.host_sync). The
collector is an observer (cluster.observers) that claims no domain: when a host's sample is due
(`PORTAL_METRICS_INTERVAL_SECONDS`) it says so in `wants_stats`, the same single call then brings every
running domain's counters too, and `reconcile` stores them. Sampling costs no extra libvirt call.

Rates are differences of two readings of cumulative counters (CPU time, disk and network bytes) divided
by the time between them. The last reading of each running domain is kept in `DomainCounters`, so a
monitor that restarts (or a host taken over by another monitor) goes on from it. A domain that was
started again since (a new libvirt domain id, or a counter that went down) counts from zero: its counters
since the new start are its use in the interval. Readings further apart than `PORTAL_METRICS_MAX_GAP_SECONDS`
give no rates (the next interval does).

Per host and interval the database sees a constant number of queries whatever the number of domains:
the previous readings, the VMs of these domains, the samples (bulk_create), the readings (one upsert),
and the readings of domains no longer running removed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from cluster.observers import Reconciled
from portal.events import publish_each, vm_watch_group
from portal.hypervisor import DomainState, DomainStats
from vms.models import VM

from .models import DomainCounters, HostSample, Resolution, VMSample

if TYPE_CHECKING:
    from cluster.models import Host

log = logging.getLogger("monitoring.collector")

MIB = 1024 * 1024
HOST_ROW = ""  # DomainCounters.uuid of the host's own row


@dataclass(frozen=True)
class Reading:
    """One domain's cumulative counters at one moment."""

    at: datetime
    domain_id: int = -1
    cpu_time_ns: int | None = None
    rd_bytes: int = 0
    wr_bytes: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0

    @classmethod
    def of(cls, at: datetime, stats: DomainStats) -> Reading:
        return cls(at=at, domain_id=stats.domain_id, cpu_time_ns=stats.cpu_time_ns, rd_bytes=stats.rd_bytes,
                   wr_bytes=stats.wr_bytes, rx_bytes=stats.rx_bytes, tx_bytes=stats.tx_bytes)

    @classmethod
    def of_row(cls, row: DomainCounters) -> Reading:
        return cls(at=row.at, domain_id=row.domain_id, cpu_time_ns=row.cpu_time_ns, rd_bytes=row.rd_bytes,
                   wr_bytes=row.wr_bytes, rx_bytes=row.rx_bytes, tx_bytes=row.tx_bytes)


@dataclass(frozen=True)
class Rates:
    """What a domain used between two readings."""

    seconds: float
    cpu_ns: int  # CPU time used (all vCPUs), for the host's total
    cpu_pct: float  # percent of the domain's vCPUs, 0-100
    disk_read_bps: float
    disk_write_bps: float
    net_rx_bps: float
    net_tx_bps: float


def restarted(prev: Reading, cur: Reading) -> bool:
    """The domain was started again between the readings: another domain id, or a counter went down."""
    if prev.domain_id != cur.domain_id:
        return True
    pairs = [(prev.rd_bytes, cur.rd_bytes), (prev.wr_bytes, cur.wr_bytes), (prev.rx_bytes, cur.rx_bytes),
             (prev.tx_bytes, cur.tx_bytes)]
    if prev.cpu_time_ns is not None and cur.cpu_time_ns is not None:
        pairs.append((prev.cpu_time_ns, cur.cpu_time_ns))
    return any(now < before for before, now in pairs)


def rates_between(prev: Reading | None, cur: Reading, *, vcpus: int, max_gap: float) -> Rates | None:
    """The rates between two readings; None without a usable previous one (none, not before `cur`, or
    more than `max_gap` seconds before it). After a restart the counters since the new start count."""
    if prev is None:
        return None
    elapsed = (cur.at - prev.at).total_seconds()
    if elapsed <= 0 or elapsed > max_gap:
        return None
    fresh = restarted(prev, cur)

    def delta(before: int | None, now: int | None) -> int:
        if now is None:
            return 0
        return now if fresh or before is None else now - before

    cpu_ns = delta(prev.cpu_time_ns, cur.cpu_time_ns)
    cpu_pct = min(100.0, max(0.0, cpu_ns / (elapsed * 1e9 * vcpus) * 100)) if vcpus > 0 else 0.0
    return Rates(seconds=elapsed, cpu_ns=cpu_ns, cpu_pct=cpu_pct,
                 disk_read_bps=delta(prev.rd_bytes, cur.rd_bytes) / elapsed,
                 disk_write_bps=delta(prev.wr_bytes, cur.wr_bytes) / elapsed,
                 net_rx_bps=delta(prev.rx_bytes, cur.rx_bytes) / elapsed,
                 net_tx_bps=delta(prev.tx_bytes, cur.tx_bytes) / elapsed)


def memory_used_bytes(stats: DomainStats) -> int | None:
    """Guest memory in use from the balloon driver's statistics (available - unused), when the guest
    reports them; None otherwise (the memory the domain holds is not what the guest uses)."""
    if stats.balloon_available_kib is None or stats.balloon_unused_kib is None:
        return None
    return max(0, stats.balloon_available_kib - stats.balloon_unused_kib) * 1024


@dataclass(frozen=True)
class Collected:
    host: str
    vm_samples: int
    host_sample: bool
    running: int


def samples_record(*, host: Host, domains: list[DomainState], now: datetime | None = None) -> Collected:
    """Store one interval of `host`: a raw VMSample per running VM of the portal with a previous reading,
    a raw HostSample, and the readings for next time. `domains` carry their counters (`stats`)."""
    now = now or timezone.now()
    max_gap = float(settings.METRICS_MAX_GAP_SECONDS)
    running = {d.uuid: d.stats for d in domains if d.stats is not None}
    previous = {row.uuid: row for row in DomainCounters.objects.filter(host=host)}
    vms = {str(vm.uuid): vm for vm in VM.objects.filter(uuid__in=list(running))
           .only("pk", "uuid", "vcpus", "memory_mib", "disk_gib")} if running else {}

    vm_rows: list[VMSample] = []
    total_cpu_ns = 0
    disk_r = disk_w = net_rx = net_tx = 0.0
    readings: list[DomainCounters] = []
    for uuid, stats in running.items():
        cur = Reading.of(now, stats)
        prev_row = previous.get(uuid)
        vcpus = stats.vcpus or (vms[uuid].vcpus if uuid in vms else 0)
        rates = rates_between(Reading.of_row(prev_row) if prev_row else None, cur, vcpus=vcpus, max_gap=max_gap)
        readings.append(DomainCounters(host=host, uuid=uuid, at=now, domain_id=cur.domain_id,
                                       cpu_time_ns=cur.cpu_time_ns, rd_bytes=cur.rd_bytes, wr_bytes=cur.wr_bytes,
                                       rx_bytes=cur.rx_bytes, tx_bytes=cur.tx_bytes))
        if rates is None:
            continue
        total_cpu_ns += rates.cpu_ns
        disk_r += rates.disk_read_bps
        disk_w += rates.disk_write_bps
        net_rx += rates.net_rx_bps
        net_tx += rates.net_tx_bps
        vm = vms.get(uuid)
        if vm is not None:
            vm_rows.append(VMSample(
                vm=vm, host=host, resolution=Resolution.RAW, at=now, seconds=rates.seconds,
                cpu_pct=rates.cpu_pct, vcpus=vcpus, memory_mib=vm.memory_mib, disk_gib=vm.disk_gib,
                mem_used_bytes=memory_used_bytes(stats), disk_read_bps=rates.disk_read_bps,
                disk_write_bps=rates.disk_write_bps, net_rx_bps=rates.net_rx_bps, net_tx_bps=rates.net_tx_bps))

    host_prev = previous.get(HOST_ROW)
    host_elapsed = (now - host_prev.at).total_seconds() if host_prev else 0.0
    host_row = None
    if 0 < host_elapsed <= max_gap:
        host_row = HostSample(
            host=host, resolution=Resolution.RAW, at=now, seconds=host_elapsed,
            cpu_pct=min(100.0, total_cpu_ns / (host_elapsed * 1e9 * host.cpus) * 100) if host.cpus else 0.0,
            mem_used_bytes=max(0, host.memory_mib - host.free_memory_mib) * MIB,
            mem_total_bytes=host.memory_mib * MIB, running_domains=len(running),
            disk_read_bps=disk_r, disk_write_bps=disk_w, net_rx_bps=net_rx, net_tx_bps=net_tx)
    readings.append(DomainCounters(host=host, uuid=HOST_ROW, at=now))

    with transaction.atomic():
        if vm_rows:
            VMSample.objects.bulk_create(vm_rows, batch_size=1000)
        if host_row is not None:
            host_row.save(force_insert=True)
        DomainCounters.objects.bulk_create(
            readings, batch_size=1000, update_conflicts=True, unique_fields=["host", "uuid"],
            update_fields=["at", "domain_id", "cpu_time_ns", "rd_bytes", "wr_bytes", "rx_bytes", "tx_bytes"])
        gone = set(previous) - set(running) - {HOST_ROW}
        if gone:  # stopped or moved away: their next start is a new one
            DomainCounters.objects.filter(host=host, uuid__in=gone).delete()
        publish_each([(vm_watch_group(row.vm_id), {"kind": "vm.sample", "id": row.vm_id, "point": sample_point(row)})
                      for row in vm_rows])  # the VM pages that watch them append the point
    return Collected(host=host.name, vm_samples=len(vm_rows), host_sample=host_row is not None,
                     running=len(running))


def sample_point(row: VMSample) -> dict[str, float | int | None]:
    """One sample as the charts draw it (the API's points and the live updates alike)."""
    return {"t": int(row.at.timestamp()), "cpu_pct": round(row.cpu_pct, 2), "mem_used_bytes": row.mem_used_bytes,
            "memory_bytes": row.memory_mib * MIB, "disk_read_bps": round(row.disk_read_bps, 1),
            "disk_write_bps": round(row.disk_write_bps, 1), "net_rx_bps": round(row.net_rx_bps, 1),
            "net_tx_bps": round(row.net_tx_bps, 1)}


class SampleObserver:
    """The collector as a cluster observer: asks for the counters when a host's sample is due, stores
    them in the reconcile that follows, claims nothing."""

    def __init__(self) -> None:
        self._last: dict[int, float] = {}  # host id -> monotonic time of its last sample (this process)
        self._asked: set[int] = set()  # hosts whose listing was asked for the counters
        self._lock = threading.Lock()

    def wants_stats(self, *, host: Host) -> bool:
        interval = float(settings.METRICS_INTERVAL_SECONDS)
        if interval <= 0:
            return False
        with self._lock:
            last = self._last.get(host.pk)
            # 0.9: a reconcile a little early (timer jitter) still samples, instead of waiting a whole turn.
            due = last is None or time.monotonic() - last >= interval * 0.9
            if due:
                self._asked.add(host.pk)
        return due

    def reconcile(self, *, host: Host, domains: list[DomainState]) -> Reconciled:
        with self._lock:
            asked = host.pk in self._asked
            self._asked.discard(host.pk)
            if asked:
                self._last[host.pk] = time.monotonic()
        if asked:
            try:
                samples_record(host=host, domains=domains)
            except Exception:  # a failed sample must never stop the reconcile
                log.exception("sampling %s failed", host.name)
        return Reconciled()

    def observe(self, *, host: Host, uuid: str) -> None:
        return None
