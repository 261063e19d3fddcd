"""Placement: filters drop hosts that cannot take the VM, weights rank the rest."""

from __future__ import annotations

from django.db.models import Count, Q, Sum
from django.db.models.functions import Coalesce

from portal.exceptions import Conflict

from .choices import HostStatus, VMStatus
from .models import Host


def pick_host(*, vcpus: int, memory_mib: int) -> Host:
    """The enabled, reachable host with the most memory left after its VMs' reservations."""
    hosts = (
        Host.objects.filter(enabled=True)
        .exclude(status__in=[HostStatus.DOWN, HostStatus.MAINTENANCE])
        .annotate(
            committed=Coalesce(Sum("vms__memory_mib", filter=Q(vms__status__in=VMStatus.COUNTED)), 0),
            vm_count=Count("vms", filter=Q(vms__status__in=VMStatus.COUNTED)),
        )
    )
    candidates = []
    for host in hosts:
        free = (host.memory_mib or 0) - host.committed
        candidates.append((free, -host.vm_count, -host.pk, host))
    if not candidates:
        raise Conflict("No hypervisor host is available for new VMs; ask an administrator.")
    candidates.sort(key=lambda c: c[:3], reverse=True)
    return candidates[0][3]
