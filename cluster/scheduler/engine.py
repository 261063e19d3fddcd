"""Placeholder pipeline (first fit by free memory) until the Scheduler API lands: see __init__."""

from __future__ import annotations

from django.db.models import QuerySet

from cluster.choices import HostStatus
from cluster.models import Cluster, Host
from cluster.placement import HostLoad, host_loads
from cluster.scheduler import Move, Placement, VMRequest
from portal.exceptions import Conflict


def run_schedule(*, request: VMRequest, cluster: Cluster | None, exclude_host_ids: frozenset[int], lock: bool,
                 hosts: QuerySet[Host] | None) -> Placement:
    qs = (hosts if hosts is not None else Host.objects.all()).filter(enabled=True, status__in=HostStatus.PLACEABLE)
    if cluster is not None:
        qs = qs.filter(cluster=cluster)
    if request.allowed_host_ids is not None:
        qs = qs.filter(pk__in=request.allowed_host_ids)
    if request.pinned_host_ids:
        qs = qs.filter(pk__in=request.pinned_host_ids)
    excluded = set(exclude_host_ids) | ({request.current_host_id} if request.current_host_id else set())
    loads = host_loads()
    best = None
    for host in qs.exclude(pk__in=excluded):
        load = loads.get(host.pk, HostLoad())
        free = (host.memory_mib or 0) - load.memory_mib
        if free < request.memory_mib:
            continue
        key = (free, -load.vms, -host.pk)
        if best is None or key > best[0]:
            best = (key, host)
    if best is None:
        raise Conflict("No hypervisor host has room for this VM; ask an administrator.")
    return Placement(host=best[1], explanation={"policy": "placeholder", "chosen": best[1].name})


def run_balance(*, cluster: Cluster) -> list[Move]:
    return []
