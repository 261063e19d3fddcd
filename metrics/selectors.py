"""What /metrics reports, read from the database at scrape time in a fixed number of queries (one per
family of gauges, whatever the number of VMs, hosts or jobs): the Prometheus collector (metrics.collector)
only formats these values.

Nothing here writes. The per-VM and per-host values are the collector's latest raw samples
(monitoring.models), younger than settings.METRICS_SAMPLE_MAX_AGE_SECONDS.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Min, OuterRef, Subquery
from django.utils import timezone

from cluster.models import Host
from consoles.services import console_sessions_open
from monitoring.models import HostSample, Resolution, VMSample
from portal.choices import JobStatus
from portal.models import Job
from vms.choices import VMStatus
from vms.models import VM


@dataclass(frozen=True)
class QueueDepth:
    """Jobs waiting for a worker: how many, and since when the oldest (None: none waits)."""

    pending: int
    oldest_pending_at: datetime | None


@dataclass(frozen=True)
class HostUse:
    """A host's latest raw sample."""

    host: str
    at: datetime
    cpu_pct: float
    mem_used_bytes: int
    mem_total_bytes: int
    running_domains: int
    disk_read_bps: float
    disk_write_bps: float
    net_rx_bps: float
    net_tx_bps: float


@dataclass(frozen=True)
class VMUse:
    """A VM's latest raw sample, with the labels that identify it (name, id, owner, host)."""

    vm_id: int
    vm: str
    owner: str
    host: str
    at: datetime
    cpu_pct: float
    vcpus: int
    memory_bytes: int
    mem_used_bytes: int | None
    disk_read_bps: float
    disk_write_bps: float
    net_rx_bps: float
    net_tx_bps: float


MIB = 1024 * 1024


def jobs_by_kind_and_status() -> dict[tuple[str, str], int]:
    """{(kind, status): number of jobs} -- one grouped query over the job table."""
    rows = Job.objects.order_by().values_list("kind", "status").annotate(n=Count("id"))
    return {(kind, status): n for kind, status, n in rows}


def job_queue_depth() -> QueueDepth:
    """Pending jobs and the creation time of the oldest of them -- one query."""
    found = Job.objects.filter(status=JobStatus.PENDING).aggregate(n=Count("id"), oldest=Min("created_at"))
    return QueueDepth(pending=found["n"] or 0, oldest_pending_at=found["oldest"])


def console_sessions_by_kind() -> dict[str, int]:
    """{console kind: sessions open now} (the consoles app's own definition of open) -- one query."""
    rows = console_sessions_open().order_by().values_list("kind").annotate(n=Count("id"))
    return dict(rows)


def vms_by_status() -> dict[str, int]:
    """{status: VMs}, every status but deleted (deleted rows are kept for the record) -- one query."""
    rows = VM.objects.exclude(status=VMStatus.DELETED).order_by().values_list("status").annotate(n=Count("id"))
    return dict(rows)


def hosts_by_status() -> dict[str, int]:
    """{status: hosts} -- one query."""
    return dict(Host.objects.order_by().values_list("status").annotate(n=Count("id")))


def _horizon() -> datetime:
    return timezone.now() - timedelta(seconds=int(settings.METRICS_SAMPLE_MAX_AGE_SECONDS))


def host_latest_use() -> list[HostUse]:
    """Each host's latest raw sample younger than the horizon -- one query (an index lookup per host on
    hostsample_series, however many samples the table keeps)."""
    latest = (HostSample.objects.filter(host=OuterRef("pk"), resolution=Resolution.RAW, at__gte=_horizon())
              .order_by("-at").values("pk")[:1])
    ids = Host.objects.order_by().annotate(sample=Subquery(latest)).values("sample")
    samples = HostSample.objects.filter(pk__in=ids).select_related("host").order_by("host__name")
    return [HostUse(host=s.host.name, at=s.at, cpu_pct=s.cpu_pct, mem_used_bytes=s.mem_used_bytes,
                    mem_total_bytes=s.mem_total_bytes, running_domains=s.running_domains,
                    disk_read_bps=s.disk_read_bps, disk_write_bps=s.disk_write_bps, net_rx_bps=s.net_rx_bps,
                    net_tx_bps=s.net_tx_bps) for s in samples]


def vm_latest_use() -> list[VMUse]:
    """Each VM's latest raw sample younger than the horizon (so a VM that stopped reporting drops out), for
    VMs not stopped or deleted (a stopped VM drops out at once: its last sample is no use now) -- one query
    (an index lookup per VM on vmsample_series). The host is the sample's (where the VM ran then), else the
    VM's."""
    latest = (VMSample.objects.filter(vm=OuterRef("pk"), resolution=Resolution.RAW, at__gte=_horizon())
              .order_by("-at").values("pk")[:1])
    ids = (VM.objects.exclude(status__in=[VMStatus.DELETED, VMStatus.STOPPED]).order_by()
           .annotate(sample=Subquery(latest)).values("sample"))
    samples = (VMSample.objects.filter(pk__in=ids).select_related("vm__owner", "vm__host", "host")
               .order_by("vm_id"))
    return [VMUse(vm_id=s.vm_id, vm=s.vm.name, owner=s.vm.owner.get_username(),
                  host=(s.host or s.vm.host).name, at=s.at, cpu_pct=s.cpu_pct, vcpus=s.vcpus,
                  memory_bytes=s.memory_mib * MIB, mem_used_bytes=s.mem_used_bytes,
                  disk_read_bps=s.disk_read_bps, disk_write_bps=s.disk_write_bps, net_rx_bps=s.net_rx_bps,
                  net_tx_bps=s.net_tx_bps) for s in samples]
