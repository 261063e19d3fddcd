"""Read-only aggregates for the admin dashboard: a fixed, small number of queries, none per row."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Count, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from cluster.models import ForeignDomain, Host
from portal.actors import Actor, is_admin
from portal.choices import JobStatus
from portal.exceptions import PermissionDenied
from portal.models import Job

from .choices import VMStatus
from .models import VM


@dataclass(frozen=True)
class HostCapacity:
    host: Host
    vms: int
    vcpus: int
    memory_mib: int
    foreign: int

    @property
    def vcpu_percent(self) -> int | None:
        return round(100 * self.vcpus / self.host.cpus) if self.host.cpus else None

    @property
    def memory_percent(self) -> int | None:
        return round(100 * self.memory_mib / self.host.memory_mib) if self.host.memory_mib else None


@dataclass(frozen=True)
class Dashboard:
    hosts: list[HostCapacity]
    totals: dict[str, int]
    vm_status_counts: dict[str, int]
    failed_jobs_count: int
    errored_jobs_count: int
    failed_jobs_by_kind: list[dict]
    recent_failed_jobs: list[Job]
    active_jobs_count: int
    error_vms_count: int
    error_vms: list[VM]
    foreign_count: int
    since: object = field(default=None)


def host_capacity() -> list[HostCapacity]:
    """Per host: the VMs placed on it (everything that still holds resources) and what they commit."""
    counted = Q(vms__status__in=VMStatus.COUNTED)
    hosts = Host.objects.annotate(
        n_vms=Count("vms", filter=counted),
        committed_vcpus=Coalesce(Sum("vms__vcpus", filter=counted), 0),
        committed_memory=Coalesce(Sum("vms__memory_mib", filter=counted), 0),
    ).order_by("name")
    foreign = dict(ForeignDomain.objects.values_list("host").annotate(n=Count("id")).values_list("host", "n"))
    return [HostCapacity(h, h.n_vms, h.committed_vcpus, h.committed_memory, foreign.get(h.pk, 0)) for h in hosts]


def dashboard(*, hours: int = 24, limit: int = 10) -> Dashboard:
    """Everything the operator dashboard shows: capacity, failing jobs, drift, foreign domains."""
    since = timezone.now() - timedelta(hours=hours)
    hosts = host_capacity()
    totals = {
        "hosts": len(hosts),
        "hosts_up": sum(1 for h in hosts if h.host.status == "up"),
        "vms": sum(h.vms for h in hosts),
        "vcpus": sum(h.vcpus for h in hosts),
        "cpus": sum(h.host.cpus for h in hosts),
        "memory_mib": sum(h.memory_mib for h in hosts),
        "host_memory_mib": sum(h.host.memory_mib for h in hosts),
    }
    status_counts = dict(VM.objects.exclude(status=VMStatus.DELETED).values_list("status")
                         .annotate(n=Count("id")).values_list("status", "n"))
    bad = (JobStatus.FAILED, JobStatus.ERRORED)
    recent_bad = Job.objects.filter(status__in=bad, created_at__gte=since)
    by_status = dict(recent_bad.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    by_kind = list(recent_bad.values("kind").annotate(
        failed=Count("id", filter=Q(status=JobStatus.FAILED)),
        errored=Count("id", filter=Q(status=JobStatus.ERRORED)),
    ).order_by("-failed", "-errored", "kind"))
    error_vms = VM.objects.filter(status=VMStatus.ERROR).select_related("owner", "host").order_by(
        "-status_changed_at")
    return Dashboard(
        hosts=hosts,
        totals=totals,
        vm_status_counts=status_counts,
        failed_jobs_count=by_status.get(JobStatus.FAILED, 0),
        errored_jobs_count=by_status.get(JobStatus.ERRORED, 0),
        failed_jobs_by_kind=by_kind,
        recent_failed_jobs=list(recent_bad.select_related("actor").order_by("-created_at")[:limit]),
        active_jobs_count=Job.objects.filter(status__in=JobStatus.ACTIVE).count(),
        error_vms_count=status_counts.get(VMStatus.ERROR, 0),
        error_vms=list(error_vms[:limit]),
        foreign_count=sum(h.foreign for h in hosts),
        since=since,
    )


def host_capacity_for(*, actor: Actor) -> list[HostCapacity]:
    """Hosts with what their VMs commit, for an administrator (others: PermissionDenied)."""
    if not is_admin(actor):
        raise PermissionDenied("Only administrators can see the hosts.")
    return host_capacity()
