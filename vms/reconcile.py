"""Drift: keep VM states true to what libvirt says (lifecycle events and the periodic reconcile).

libvirt is the truth about what runs; the database is the truth about who owns what and what was
asked. `VMObserver` is registered with cluster.observers (in VmsConfig.ready): cluster lists a
host's domains and receives its events, and hands them here.
"""

from __future__ import annotations

import logging
import uuid as uuidlib

from django.conf import settings
from django.db.models import Exists, OuterRef
from django.utils import timezone

from cluster.choices import HostStatus
from cluster.models import ForeignDomain, Host
from cluster.observers import Reconciled
from cluster.services import host_domain_metadata
from portal.audit import audit
from portal.choices import JobStatus, Via
from portal.exceptions import NotFound, PortalError
from portal.hypervisor import DomainState, PowerState, get_driver
from portal.models import AuditEvent, Job

from .choices import SnapshotStatus, VMStatus
from .lifecycle import status_for
from .migration import vm_find_elsewhere, vm_moved
from .models import VM, Snapshot, VMNic
from .services import nics_publish, vm_set_status

log = logging.getLogger(__name__)


def vm_observe(*, vm: VM, state: PowerState | None, source: str) -> bool:
    """Bring the VM's status in line with what libvirt says; returns True when it drifted.

    While a job owns the VM (transitional state with an active job) only the power state is
    recorded: the job writes the outcome.
    """
    now = timezone.now()
    if vm.status == VMStatus.UNKNOWN:
        return vm_restore_known(vm=vm, state=state, source=source)
    snapshot_busy = getattr(vm, "snapshot_busy", None)  # annotated by reconcile; one query otherwise
    if snapshot_busy is None:
        snapshot_busy = vm.snapshots.filter(status__in=SnapshotStatus.BUSY).exists()
    if snapshot_busy:
        # Taking a memory snapshot pauses the guest, a revert restarts it: the job writes the outcome.
        VM.objects.filter(pk=vm.pk).update(power_state=state or "", observed_at=now)
        return False
    if vm.status in VMStatus.TRANSITIONAL:
        busy = Job.objects.filter(target_type="vm", target_id=str(vm.pk), status__in=JobStatus.ACTIVE,
                                  external=False).exists()  # a plugin's job owns no VM state
        if busy:
            VM.objects.filter(pk=vm.pk).update(power_state=state or "", observed_at=now)
            return False
        if vm.status in (VMStatus.CREATING, VMStatus.DELETING, VMStatus.MIGRATING):
            return False  # left to the job reaper: it finishes or cleans up
    if vm.status == VMStatus.DELETED:
        return False
    wanted = status_for(state)
    if wanted == vm.status and (vm.power_state or "") == (state or ""):
        VM.objects.filter(pk=vm.pk).update(observed_at=now)
        return False
    drifted = wanted != vm.status
    if drifted:
        error = "" if state is not None else (
            "The domain is missing on the host (removed outside the portal). Start re-creates it "
            "from the portal's record; Delete cleans up.")
        old = vm.get_status_display().lower()
        vm_set_status(vm, wanted, last_error=error, power_state=state or "", observed_at=now)
        audit(actor=None, via=Via.SYSTEM, action="vm.drift", target=vm,
              message=f"{vm.name} was {old} in the portal; libvirt says "
                      f"{state or 'the domain is missing'} ({source})")
    else:
        VM.objects.filter(pk=vm.pk).update(power_state=state or "", observed_at=now)
    return drifted


def vm_reconcile_host(*, host: Host, domains: list[DomainState]) -> Reconciled:
    """Every live VM on `host` against the host's domains; the VMs' domains are claimed as ours."""
    by_uuid = {d.uuid: d for d in domains}
    drifted = 0
    busy = Snapshot.objects.filter(vm=OuterRef("pk"), status__in=SnapshotStatus.BUSY)
    vms = VM.objects.filter(host=host).exclude(status=VMStatus.DELETED).select_related("owner")
    claimed = set()
    for vm in vms.annotate(snapshot_busy=Exists(busy)):
        claimed.add(str(vm.uuid))
        info = by_uuid.get(str(vm.uuid))
        if info is None and _moved_away(vm):
            drifted += 1
            continue
        if vm_observe(vm=vm, state=info.state if info else None, source="reconcile"):
            drifted += 1
    hints: dict[str, str] = {}
    drifted += _arrivals(host=host, domains=[d for d in domains if d.uuid not in claimed], claimed=claimed,
                         hints=hints)
    nic_addresses_refresh(host=host)
    return Reconciled(claimed=claimed, drifted=drifted, hints=hints)


# --- VMs that moved between hosts (issue #12) -------------------------------------------------------
# A migrating VM belongs to its job on both hosts. A domain of this portal found on another host than
# its record's (moved by `virsh migrate`) takes the record with it (vm.moved): never "missing", never
# an orphan. A copy on two hosts: the running one wins; the stale definition is listed for
# administrators with a hint saying whose it is, and never deleted here.

def _moved_away(vm: VM) -> bool:
    """The VM's domain is missing on its host: did it move to another host of the cluster?"""
    if vm.status in VMStatus.TRANSITIONAL or vm.status == VMStatus.DELETED:
        return False
    try:
        where = vm_find_elsewhere(vm)
    except PortalError:
        return False
    if where is None:
        return False
    vm_moved(vm=vm, host=where[0], state=where[1], source="missing here, found there by reconcile")
    return True


def _arrivals(*, host: Host, domains: list[DomainState], claimed: set[str], hints: dict[str, str]) -> int:
    """Domains of this portal on `host` whose VM's record names another host.

    One query finds the unclaimed domains whose UUID is a live VM's elsewhere; only those have their
    metadata read (is it this portal's domain?), so the rest of the host's domains cost no call."""
    moved = 0
    uuids = []
    for d in domains:
        try:
            uuids.append(uuidlib.UUID(d.uuid))
        except ValueError:
            continue
    elsewhere = {str(vm.uuid): vm for vm in VM.objects.select_related("host", "owner").filter(uuid__in=uuids)
                 .exclude(status=VMStatus.DELETED).exclude(host=host)} if uuids else {}
    for d in domains:
        vm = elsewhere.get(d.uuid)
        if vm is None:
            continue
        meta = host_domain_metadata(host=host, domain=d) or {}
        if meta.get("instance") != settings.INSTANCE_ID or not meta.get("vm-id"):
            continue
        if vm.status == VMStatus.MIGRATING:
            claimed.add(d.uuid)  # arriving: the job records it
            continue
        there: PowerState | None = None
        reachable = vm.host.status in HostStatus.REACHABLE  # a dead host is never dialled from here
        if reachable:
            try:
                there = get_driver(vm.host.uri).domain_info(d.uuid).state
            except NotFound:
                pass
            except PortalError:
                reachable = False
        if d.state.is_active and not (there is not None and there.is_active):
            vm_moved(vm=vm, host=host, state=d.state, source="found running here by reconcile")
        elif not d.state.is_active and reachable and there is None:
            vm_moved(vm=vm, host=host, state=d.state, source="found defined here by reconcile")
        elif not d.state.is_active and _ha_cleanup_pending(vm, host):
            pass  # the old definition of a VM restarted elsewhere by HA: ha_cleanup_stale undefines it
        else:
            where = "runs" if there is not None and there.is_active else "is recorded"
            hints[d.uuid] = (f"stale copy of VM {vm.name} (#{vm.pk}), which {where} on {vm.host.name}: "
                             "check, then undefine")
            if not ForeignDomain.objects.filter(host=host, uuid=d.uuid).exists():
                audit(actor=None, via=Via.SYSTEM, action="vm.stale_copy", target=vm,
                      outcome=AuditEvent.Outcome.FAILED,
                      message=f"A second definition of {vm.name} ({d.state}) is on {host.name}; the VM {where} on "
                              f"{vm.host.name}. It is listed with the foreign domains of {host.name} and left "
                              "alone: an administrator removes it.")
            continue
        claimed.add(d.uuid)
        moved += 1
    return moved


def _ha_cleanup_pending(vm: VM, host: Host) -> bool:
    """An HA restart moved `vm` off `host`, and the clean-up of its old definition there has not run yet
    (vms.cluster_ops.ha_cleanup_stale, on the monitor's next housekeeping turn): not a stale copy to report."""
    results = Job.objects.filter(kind="vm.ha_restart", status=JobStatus.SUCCEEDED, target_type="vm",
                                 target_id=str(vm.pk)).values_list("result", flat=True)
    return any((r or {}).get("stale_host_id") == host.pk and not (r or {}).get("stale_cleaned") for r in results)


def nic_addresses_refresh(*, host: Host) -> int:
    """Each NIC's address from its network's DHCP leases on the host (one libvirt call per network);
    pages showing a VM whose addresses changed are told. Returns how many NICs changed."""
    nics = list(VMNic.objects.filter(vm__host=host).exclude(vm__status=VMStatus.DELETED)
                .select_related("network", "vm"))
    if not nics:
        return 0
    driver = get_driver(host.uri)
    leases: dict[str, str] = {}
    for network in {n.network for n in nics if n.network.manages_addresses}:
        try:
            for lease in driver.network_leases(network.libvirt_name):
                if lease.ip and ":" not in lease.ip:  # the IPv4 lease is the one to show and to ssh to
                    leases[lease.mac] = lease.ip
        except PortalError as exc:
            log.debug("leases of %s on %s: %s", network.name, host.name, exc.detail or exc.message)
    now = timezone.now()
    changed: dict[int, VM] = {}
    seen: list[int] = []
    for nic in nics:
        running = nic.vm.status in VMStatus.ACTIVE
        ip = leases.get(nic.mac) if running else None
        if ip != nic.ip_address:
            VMNic.objects.filter(pk=nic.pk).update(ip_address=ip, ip_seen_at=now if ip else nic.ip_seen_at)
            changed[nic.vm.pk] = nic.vm
        elif ip:
            seen.append(nic.pk)
    if seen:  # addresses that stayed: one update for all of them
        VMNic.objects.filter(pk__in=seen).update(ip_seen_at=now)
    for vm in changed.values():
        nics_publish(vm)
    return len(changed)


def vm_observe_event(*, host: Host, uuid: str) -> None:
    """A lifecycle event from libvirt for a domain on `host`: a cue to read the domain's state now.

    The state is read when the event is handled, not taken from the event: events queued behind a
    busy moment (a snapshot pauses the guest, a revert restarts it) must not replay old states.
    """
    try:
        vm = VM.objects.select_related("owner").get(host=host, uuid=uuidlib.UUID(uuid))
    except (VM.DoesNotExist, ValueError):
        return
    try:
        state = get_driver(host.uri).domain_info(uuid).state
    except NotFound:
        state = None
    except PortalError as exc:
        log.warning("event for %s on %s: cannot read its state: %s", vm.name, host.name,
                    exc.detail or exc.message)
        return
    if state is None and _moved_away(vm):
        return
    vm_observe(vm=vm, state=state, source="event")


# --- hosts that do not answer: their VMs are unknown until libvirt says again ---------------------

def vm_mark_unknown(*, host: Host) -> int:
    """Show the VMs of an unreachable host as unknown, remembering each one's status in `known_status`
    (the quota still counts them). A VM a job owns is left to the job (which fails fast on a host that
    does not answer); VMs being created or deleted are the reaper's. Returns how many changed."""
    changed = 0
    vms = (VM.objects.filter(host=host).exclude(status__in=(VMStatus.DELETED, VMStatus.UNKNOWN, VMStatus.CREATING,
                                                           VMStatus.DELETING))
           .select_related("owner"))
    for vm in vms:
        if Job.objects.filter(target_type="vm", target_id=str(vm.pk), status__in=JobStatus.ACTIVE).exists():
            continue
        vm_set_status(vm, VMStatus.UNKNOWN, known_status=vm.status)
        changed += 1
    if changed:
        log.warning("%s does not answer: %d VM(s) shown as unknown", host.name, changed)
    return changed


def vm_restore_known(*, vm: VM, state: PowerState | None, source: str) -> bool:
    """The host of an unknown VM answers again: its status is what libvirt says now. Audited as drift
    only when that differs from the status it had before the host stopped answering."""
    wanted = status_for(state)
    known = vm.known_status
    error = "" if state is not None else (
        "The domain is missing on the host (removed while the host did not answer). Start re-creates it "
        "from the portal's record; Delete cleans up.")
    vm_set_status(vm, wanted, last_error=error, known_status="", power_state=state or "", observed_at=timezone.now())
    drifted = bool(known) and wanted != known
    if drifted:
        audit(actor=None, via=Via.SYSTEM, action="vm.drift", target=vm,
              message=f"{vm.name} was {known} before its host stopped answering; libvirt now says "
                      f"{state or 'the domain is missing'} ({source})")
    return drifted


class VMObserver:
    """The VMs' side of reconciliation, registered with cluster.observers."""

    def reconcile(self, *, host: Host, domains: list[DomainState]) -> Reconciled:
        return vm_reconcile_host(host=host, domains=domains)

    def observe(self, *, host: Host, uuid: str) -> None:
        vm_observe_event(host=host, uuid=uuid)

    def host_unreachable(self, *, host: Host) -> None:
        vm_mark_unknown(host=host)
