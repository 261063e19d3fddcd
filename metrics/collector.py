"""The Prometheus side of /metrics: a custom collector that reads the database at scrape time
(metrics.selectors: seven queries whatever the number of VMs, hosts or jobs) and the registry the view
renders (that collector plus the request-duration histogram of every web process).

Names follow Prometheus' conventions: the `vmportal_` prefix, base units in the name (`_seconds`,
`_bytes`, `_bytes_per_second`, `_ratio` for 0-1 fractions), `_total` only on counters. The list is in the
README ("Prometheus metrics").
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from functools import cache

from django.utils import timezone
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from cluster.choices import HostStatus
from consoles.choices import ConsoleKind
from portal.choices import JobStatus
from vms.choices import VMStatus

from . import selectors
from .middleware import REQUEST_DURATION

HOST_LABELS = ["host"]
VM_LABELS = ["vm", "vm_id", "owner", "host"]


def _by_label(name: str, doc: str, label: str, values: Iterable[str], counts: dict[str, int]) -> GaugeMetricFamily:
    """One gauge per choice value, zeros included (an absent series would hide a state from alerts)."""
    family = GaugeMetricFamily(name, doc, labels=[label])
    for value in dict.fromkeys([*values, *sorted(counts)]):
        family.add_metric([value], counts.get(value, 0))
    return family


class PortalCollector(Collector):
    """The portal's state as gauges, read from the database on each scrape (constant queries)."""

    def describe(self) -> Iterable[Metric]:
        # Nothing to declare ahead: the registry must not call collect() (and query) when this registers.
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self._jobs()
        yield from self._portal()
        yield from self._hosts()
        yield from self._vms()

    @staticmethod
    def _jobs() -> Iterator[Metric]:
        jobs = GaugeMetricFamily("vmportal_jobs", "Jobs by kind and status (every job the portal keeps).",
                                 labels=["kind", "status"])
        counts = selectors.jobs_by_kind_and_status()
        for kind in sorted({kind for kind, _ in counts}):
            for status in JobStatus.values:
                jobs.add_metric([kind, status], counts.get((kind, status), 0))
        yield jobs
        queue = selectors.job_queue_depth()
        yield GaugeMetricFamily("vmportal_job_queue_depth", "Jobs waiting for a worker (status pending).",
                                value=queue.pending)
        age = (timezone.now() - queue.oldest_pending_at).total_seconds() if queue.oldest_pending_at else 0.0
        yield GaugeMetricFamily("vmportal_job_queue_oldest_age_seconds",
                                "How long the oldest pending job has waited (0: none waits).", value=max(0.0, age))

    @staticmethod
    def _portal() -> Iterator[Metric]:
        yield _by_label("vmportal_console_sessions_open", "Console sessions open now, by kind.", "kind",
                        ConsoleKind.values, selectors.console_sessions_by_kind())
        yield _by_label("vmportal_vms", "VMs by status (deleted VMs not counted).", "status",
                        [s for s in VMStatus.values if s != VMStatus.DELETED], selectors.vms_by_status())
        yield _by_label("vmportal_hosts", "Hypervisor hosts by status.", "status", HostStatus.values,
                        selectors.hosts_by_status())

    @staticmethod
    def _hosts() -> Iterator[Metric]:
        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"vmportal_host_{name}", doc, labels=HOST_LABELS)

        cpu = gauge("cpu_usage_ratio", "CPU use of the host's running domains, fraction of its CPUs (0-1).")
        used = gauge("memory_used_bytes", "Host memory in use.")
        total = gauge("memory_total_bytes", "Host memory in all.")
        domains = gauge("running_domains", "Domains running on the host.")
        disk_r = gauge("disk_read_bytes_per_second", "Disk reads of the host's domains.")
        disk_w = gauge("disk_write_bytes_per_second", "Disk writes of the host's domains.")
        net_rx = gauge("network_receive_bytes_per_second", "Network traffic the host's domains received.")
        net_tx = gauge("network_transmit_bytes_per_second", "Network traffic the host's domains sent.")
        at = gauge("sample_timestamp_seconds", "When the values above were sampled (Unix time).")
        for use in selectors.host_latest_use():
            labels = [use.host]
            cpu.add_metric(labels, use.cpu_pct / 100)
            used.add_metric(labels, use.mem_used_bytes)
            total.add_metric(labels, use.mem_total_bytes)
            domains.add_metric(labels, use.running_domains)
            disk_r.add_metric(labels, use.disk_read_bps)
            disk_w.add_metric(labels, use.disk_write_bps)
            net_rx.add_metric(labels, use.net_rx_bps)
            net_tx.add_metric(labels, use.net_tx_bps)
            at.add_metric(labels, use.at.timestamp())
        yield from (cpu, used, total, domains, disk_r, disk_w, net_rx, net_tx, at)

    @staticmethod
    def _vms() -> Iterator[Metric]:
        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"vmportal_vm_{name}", doc, labels=VM_LABELS)

        cpu = gauge("cpu_usage_ratio", "CPU use, fraction of the VM's vCPUs (0-1).")
        vcpus = gauge("vcpus", "vCPUs of the VM.")
        memory = gauge("memory_bytes", "Memory given to the VM.")
        used = gauge("memory_used_bytes", "Guest memory in use (only where the guest reports it).")
        disk_r = gauge("disk_read_bytes_per_second", "Disk reads.")
        disk_w = gauge("disk_write_bytes_per_second", "Disk writes.")
        net_rx = gauge("network_receive_bytes_per_second", "Network traffic received.")
        net_tx = gauge("network_transmit_bytes_per_second", "Network traffic sent.")
        at = gauge("sample_timestamp_seconds", "When the values above were sampled (Unix time).")
        for use in selectors.vm_latest_use():
            labels = [use.vm, str(use.vm_id), use.owner, use.host]
            cpu.add_metric(labels, use.cpu_pct / 100)
            vcpus.add_metric(labels, use.vcpus)
            memory.add_metric(labels, use.memory_bytes)
            if use.mem_used_bytes is not None:
                used.add_metric(labels, use.mem_used_bytes)
            disk_r.add_metric(labels, use.disk_read_bps)
            disk_w.add_metric(labels, use.disk_write_bps)
            net_rx.add_metric(labels, use.net_rx_bps)
            net_tx.add_metric(labels, use.net_tx_bps)
            at.add_metric(labels, use.at.timestamp())
        yield from (cpu, vcpus, memory, used, disk_r, disk_w, net_rx, net_tx, at)


def multiprocess_dir() -> str | None:
    """PROMETHEUS_MULTIPROC_DIR, which portal.gunicorn_conf sets for its workers (prometheus_client reads it
    itself, when first imported: the variable is the library's, not a portal setting)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


@cache
def exposition_registry() -> CollectorRegistry:
    """What /metrics renders: the database gauges, and the request durations -- of every worker of this
    gunicorn (their files in PROMETHEUS_MULTIPROC_DIR) or, in one process (daphne, tests), this one's."""
    registry = CollectorRegistry()
    if multiprocess_dir():
        MultiProcessCollector(registry)
    else:
        registry.register(REQUEST_DURATION)
    registry.register(PortalCollector())
    return registry
