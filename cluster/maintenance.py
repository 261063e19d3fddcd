"""Maintenance mode of a host, and the cluster operations that need to know VMs.

cluster knows hosts, not VMs: emptying a host (live-migrating its VMs away) and applying a balancing
pass are vms' work. vms registers them here in its AppConfig.ready (`register_operation`), and the
doors of cluster (admin, API) call the services below, which call the registered operation.

States: up -> preparing (the VMs are being moved; no new VM lands there) -> maintenance (nothing
runs there) -> up again with `host_activate`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.utils import timezone

from portal.actors import Actor, require_admin
from portal.audit import audit
from portal.exceptions import Conflict, InvalidState
from portal.models import AuditEvent

from .choices import HostStatus
from .models import Cluster, Host

EVACUATE = "evacuate"  # (actor, via, host, stop_unmovable) -> Job: empties the host (vms.cluster_ops)
BALANCE = "balance"  # (actor, via, cluster) -> list of what was started (vms.cluster_ops)

_operations: dict[str, Callable[..., Any]] = {}


def register_operation(name: str, fn: Callable[..., Any]) -> None:
    """Register what carries out cluster operation `name` (registering again replaces it)."""
    _operations[name] = fn


def _operation(name: str) -> Callable[..., Any]:
    fn = _operations.get(name)
    if fn is None:
        raise Conflict(f"No app carries out {name!r} in this portal (vms is not installed).")
    return fn


def host_maintenance_start(*, actor: Actor, via: str, host: Host, stop_unmovable: bool = False) -> Any:
    """Put an up host into maintenance: it takes no new VMs (preparing) while its running VMs are live-migrated
    away (the `host.maintenance` job, returned); it reaches maintenance once nothing runs there.

    `stop_unmovable`: VMs that cannot move are shut down (else they keep running and the host waits, with a
    report of why). Stopped VMs stay defined on the host as they are.
    """
    require_admin(actor, "Only administrators put hosts into maintenance.")
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host.pk)
        if host.status == HostStatus.MAINTENANCE:
            return None
        if host.status not in (HostStatus.UP, HostStatus.PREPARING_FOR_MAINTENANCE):
            audit(actor=actor, via=via, action="host.maintenance_start", target=host,
                  outcome=AuditEvent.Outcome.DENIED, message=f"{host.name} is {host.get_status_display().lower()}")
            raise InvalidState(f"{host.name} is {host.get_status_display().lower()}: only an up host can go into "
                               "maintenance (its VMs are live-migrated away, which needs it reachable).",
                               status=host.status)
        Host.objects.filter(pk=host.pk).update(status=HostStatus.PREPARING_FOR_MAINTENANCE,
                                               status_changed_at=timezone.now())
        host.status = HostStatus.PREPARING_FOR_MAINTENANCE
        job = _operation(EVACUATE)(actor=actor, via=via, host=host, stop_unmovable=stop_unmovable)
        audit(actor=actor, via=via, action="host.maintenance_start", target=host, job=job,
              outcome=AuditEvent.Outcome.REQUESTED,
              message=f"Maintenance of {host.name}: moving its running VMs away"
                      + (" (stopping those that cannot move)" if stop_unmovable else ""))
    return job


def host_maintenance_reached(*, host: Host, job: Any = None, message: str = "") -> bool:
    """A preparing host on which nothing runs any more enters maintenance (audited); False if it was not preparing."""
    n = Host.objects.filter(pk=host.pk, status=HostStatus.PREPARING_FOR_MAINTENANCE).update(
        status=HostStatus.MAINTENANCE, status_changed_at=timezone.now())
    if n:
        host.status = HostStatus.MAINTENANCE
        audit(actor=None, via="system", action="host.maintenance", target=host, job=job,
              message=message or f"{host.name} is in maintenance: no VM runs there")
    return bool(n)


def host_activate(*, actor: Actor, via: str, host: Host) -> Host:
    """Bring a host out of maintenance (or stop preparing it): it takes VMs again once the monitor sees it up."""
    require_admin(actor, "Only administrators activate hosts.")
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host.pk)
        if host.status == HostStatus.UP:
            return host
        if host.status not in (HostStatus.MAINTENANCE, HostStatus.PREPARING_FOR_MAINTENANCE):
            raise InvalidState(f"{host.name} is {host.get_status_display().lower()}, not in maintenance: it becomes "
                               "up by itself when the monitor reaches it.", status=host.status)
        Host.objects.filter(pk=host.pk).update(status=HostStatus.UP, status_changed_at=timezone.now())
        host.status = HostStatus.UP
        audit(actor=actor, via=via, action="host.activate", target=host, message=f"Activated {host.name}")
    return host


def cluster_balance_now(*, actor: Actor, via: str, cluster: Cluster) -> Any:
    """Run one balancing pass of `cluster` now (administrators): the moves its policy proposes, within its limits."""
    require_admin(actor, "Only administrators balance clusters.")
    return _operation(BALANCE)(actor=actor, via=via, cluster=cluster)
