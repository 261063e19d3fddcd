"""Hosts: registration, facts from libvirt, the KVM boot probe, and reconciliation (drift)."""

from __future__ import annotations

import logging
import uuid as uuidlib

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from portal.audit import audit
from portal.choices import Via
from portal.exceptions import HypervisorUnavailable, NotFound, PortalError, ValidationFailed
from portal.hypervisor import DomainInfo, DomainSpec, PowerState, get_driver

from .choices import DomainType, HostStatus, SnapshotStatus, VMStatus
from .jobs import status_for
from .models import VM, ForeignDomain, Host, Snapshot
from .services import vm_set_status

log = logging.getLogger(__name__)


def host_register(*, actor, via: str = Via.CLI, name: str, uri: str,
                  domain_type: str = DomainType.AUTO) -> Host:
    """Add (or update) a host, read its facts and make sure it has the portal's storage pool."""
    if domain_type not in DomainType.values:
        raise ValidationFailed(f"Domain type must be one of {', '.join(DomainType.values)}.", field="domain_type")
    host, created = Host.objects.update_or_create(uri=uri, defaults={"name": name, "domain_type": domain_type})
    host_refresh(host=host)
    if host.status == HostStatus.UP:
        from storage.services import pool_ensure

        pool_ensure(host=host)
    audit(actor=actor, via=via, action="host.register" if created else "host.update", target=host,
          message=f"{uri} ({domain_type})")
    return host


def host_refresh(*, host: Host) -> Host:
    """Read the host's facts from libvirt; an unreachable host is marked down, with the reason."""
    try:
        info = get_driver(host.uri).host_info()
    except HypervisorUnavailable as exc:
        was = host.status
        reason = exc.detail or exc.message  # hosts are for administrators: the hypervisor's own words
        Host.objects.filter(pk=host.pk).update(status=HostStatus.DOWN, last_error=reason)
        host.status, host.last_error = HostStatus.DOWN, reason
        if was == HostStatus.UP:
            audit(actor=None, via=Via.SYSTEM, action="host.down", target=host, message=reason)
        return host
    fields = {
        "hostname": info.hostname, "libvirt_version": info.libvirt_version, "cpus": info.cpus,
        "memory_mib": info.memory_mib, "free_memory_mib": info.free_memory_mib, "last_seen_at": timezone.now(),
        "last_error": "",
    }
    if host.status != HostStatus.MAINTENANCE:
        fields["status"] = HostStatus.UP
    Host.objects.filter(pk=host.pk).update(**fields)
    for key, value in fields.items():
        setattr(host, key, value)
    _pools_ensure(host)
    return host


def _pools_ensure(host: Host) -> None:
    """The host's portal pools are defined again where they went missing (a fresh test driver, a
    pool undefined by hand); pools that exist are left as they are."""
    from storage.models import StoragePool

    for pool in StoragePool.objects.filter(host=host):
        try:
            get_driver(host.uri).ensure_pool(pool.name, pool.path, only_if_missing=True)
        except PortalError as exc:
            log.warning("storage pool %s on %s: %s", pool.name, host.name, exc.detail or exc.message)


def host_probe_kvm(*, host: Host, timeout: float = 15.0, force: bool = False) -> bool:
    """Does a Linux guest really boot under KVM on this host? Probed once, remembered on the host.

    A host can offer /dev/kvm and still not run guests (a software substitute, nested set-ups):
    the probe boots the default image under KVM and waits for its ready banner on the console.
    """
    from storage.models import Image

    if host.kvm_boots_guests is not None and not force:
        return host.kvm_boots_guests
    driver = get_driver(host.uri)
    result = False
    reason = ""
    if "kvm" not in driver.domain_types():
        reason = "libvirt offers no kvm domain type"
    else:
        image = Image.objects.filter(boot_mode=Image.BootMode.KERNEL).exclude(ready_marker="").order_by(
            "-is_default").first()
        if image is None:
            reason = "no direct-kernel image with a ready marker to probe with"
        else:
            spec = DomainSpec(
                name=f"{settings.DOMAIN_PREFIX}-kvmprobe-{uuidlib.uuid4().hex[:6]}",
                uuid=str(uuidlib.uuid4()), vcpus=1, memory_mib=128, domain_type="kvm",
                kernel=image.kernel_path, initrd=image.initrd_path,
                cmdline="console=ttyS0,115200 panic=-1", graphics=False,
                metadata={"instance": settings.INSTANCE_ID, "probe": "kvm"},
            )
            try:
                result = driver.probe_boot(spec, image.ready_marker.encode(), timeout)
                reason = "guest booted" if result else f"no boot banner within {timeout:.0f} s"
            except PortalError as exc:
                reason = f"probe domain failed: {exc.detail or exc.message}"
    Host.objects.filter(pk=host.pk).update(kvm_boots_guests=result, kvm_probed_at=timezone.now())
    host.kvm_boots_guests = result
    log.info("KVM probe on %s: %s (%s)", host.name, result, reason)
    audit(actor=None, via=Via.SYSTEM, action="host.kvm_probe", target=host,
          message=f"KVM {'boots' if result else 'does not boot'} guests: {reason}")
    return result


def _ours(info: DomainInfo) -> bool:
    return bool(info.metadata) and info.metadata.get("instance") == settings.INSTANCE_ID \
        and "vm-id" in info.metadata


def vm_observe(*, vm: VM, state: PowerState | None, source: str) -> bool:
    """Bring the VM's status in line with what libvirt says; returns True when it drifted.

    While a job owns the VM (transitional state with an active job) only the power state is
    recorded: the job writes the outcome.
    """
    from portal.choices import JobStatus
    from portal.models import Job

    now = timezone.now()
    snapshot_busy = getattr(vm, "snapshot_busy", None)  # annotated by host_sync; one query otherwise
    if snapshot_busy is None:
        snapshot_busy = vm.snapshots.filter(status__in=SnapshotStatus.BUSY).exists()
    if snapshot_busy:
        # Taking a memory snapshot pauses the guest, a revert restarts it: the job writes the outcome.
        VM.objects.filter(pk=vm.pk).update(power_state=state or "", observed_at=now)
        return False
    if vm.status in VMStatus.TRANSITIONAL:
        busy = Job.objects.filter(target_type="vm", target_id=str(vm.pk), status__in=JobStatus.ACTIVE).exists()
        if busy:
            VM.objects.filter(pk=vm.pk).update(power_state=state or "", observed_at=now)
            return False
        if vm.status in (VMStatus.CREATING, VMStatus.DELETING):
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


def host_sync(*, host: Host) -> dict:
    """Reconcile one host: VM statuses from libvirt, foreign and orphan domains listed, never touched."""
    driver = get_driver(host.uri)
    host_refresh(host=host)
    if host.status == HostStatus.DOWN:
        return {"host": host.name, "status": "down", "error": host.last_error}
    try:
        domains = driver.list_domains()
    except PortalError as exc:
        return {"host": host.name, "status": "error", "error": exc.detail or exc.message}
    by_uuid = {d.uuid: d for d in domains}
    drifted = 0
    busy = Snapshot.objects.filter(vm=OuterRef("pk"), status__in=SnapshotStatus.BUSY)
    vms = VM.objects.filter(host=host).exclude(status=VMStatus.DELETED).select_related("owner")
    for vm in vms.annotate(snapshot_busy=Exists(busy)):
        info = by_uuid.get(str(vm.uuid))
        if vm_observe(vm=vm, state=info.state if info else None, source="reconcile"):
            drifted += 1
    known = set(str(u) for u in VM.objects.filter(host=host).exclude(status=VMStatus.DELETED)
                .values_list("uuid", flat=True))
    seen = []
    with transaction.atomic():
        for d in domains:
            if d.uuid in known:
                continue
            if _ours(d):
                hint = f"orphan of this portal (VM #{d.metadata['vm-id']} has no live record)"
            elif d.metadata:
                hint = f"portal instance {d.metadata.get('instance', '?')}"
            else:
                hint = ""
            ForeignDomain.objects.update_or_create(
                host=host, uuid=d.uuid, defaults={"name": d.name, "state": d.state, "owner_hint": hint})
            seen.append(d.uuid)
        ForeignDomain.objects.filter(host=host).exclude(uuid__in=seen).delete()
    return {"host": host.name, "status": "up", "domains": len(domains), "drifted": drifted,
            "foreign": len(seen)}


def sync_all() -> list[dict]:
    return [host_sync(host=h) for h in Host.objects.filter(enabled=True)]


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
    vm_observe(vm=vm, state=state, source="event")


def host_get(*, name_or_id) -> Host:
    text = str(name_or_id)
    host = Host.objects.filter(pk=int(text)).first() if text.isdigit() else Host.objects.filter(name=text).first()
    if host is None:
        raise NotFound(f"Host {text[:60]!r} not found.")
    return host
