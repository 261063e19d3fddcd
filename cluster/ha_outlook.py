"""What confirming a host down will do to its VMs, in words (the answers of Fence and Declare down).

Counted through the reverse relations (`host.vms`, the disks' volumes and pools): cluster imports no vms and no
storage. The rules mirror the HA pass (vms.cluster_ops.ha_plan): a highly available VM that was running restarts
elsewhere only when its cluster has HA on and every disk (and the image a thin disk is built on) sits on a pool
marked shared; the rest stay down until the host is back.
"""

from __future__ import annotations

from django.db.models import Q

from .models import Host

# The VM states the HA pass treats as "was running" (vms.cluster_ops._WAS_RUNNING), also as the last known
# state of a VM shown as unknown.
WAS_RUNNING = ("running", "paused", "starting", "rebooting", "migrating")


def _vms(n: int) -> str:
    return f"{n} VM" if n == 1 else f"{n} VMs"


def _stay(n: int) -> str:
    return "stays" if n == 1 else "stay"


def ha_outlook(host: Host) -> str:
    """E.g. "1 highly available VM will restart elsewhere; 2 VMs with disks on host-local storage stay down"."""
    was_running = host.vms.filter(
        Q(status__in=WAS_RUNNING) | Q(status="unknown", known_status__in=WAS_RUNNING))
    if not was_running.exists():
        return "no VM was running there"
    ha = was_running.filter(highly_available=True)
    others = was_running.filter(highly_available=False).count()
    parts: list[str] = []
    n_ha = ha.count()
    cluster = host.cluster
    if n_ha and not (cluster is not None and cluster.ha_enabled):
        where = f"cluster {cluster.name}" if cluster is not None else "its cluster"
        parts.append(f"HA is off in {where}: its {_vms(n_ha)} marked highly available {_stay(n_ha)} down")
    elif n_ha:
        local = ha.filter(Q(disks__volume__pool__shared=False)
                          | Q(disks__volume__backing_image__pool__shared=False)).distinct().count()
        movable = n_ha - local
        if movable:
            parts.append(f"{movable} highly available {'VM' if movable == 1 else 'VMs'} will restart elsewhere")
        if local:
            parts.append(f"{_vms(local)} with disks on host-local storage {_stay(local)} down")
    else:
        parts.append("no highly available VM was running there")
    if others:
        parts.append(f"{_vms(others)} not marked highly available {_stay(others)} down")
    return "; ".join(parts)
