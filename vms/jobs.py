"""Act phase of VM actions: job handlers that call the gateway and write outcomes in short transactions.

Handlers are idempotent (a retried job after a worker died resumes safely) and never hold a row
lock across a libvirt call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db.models import Q
from django.utils import timezone

from cluster.choices import HostStatus
from cluster.models import Host
from networks.models import Network
from networks.services import network_ensure_on_host
from portal.audit import audit
from portal.exceptions import (
    Conflict,
    HypervisorBusy,
    HypervisorError,
    HypervisorUnavailable,
    InvalidState,
    NotFound,
    PortalError,
)
from portal.hypervisor import CdromSpec, DomainInfo, NicSpec, PowerState, get_driver
from portal.jobs import JobContext, job_handler
from portal.models import AuditEvent, Job
from storage.copies import image_copy_ensure, image_copy_ready
from storage.models import Image, StoragePool, Volume
from storage.selectors import image_media_path
from storage.services import (
    image_from_volume,
    image_volume_discard,
    volume_destroy,
    volume_materialize,
    volume_write,
)

from . import lifecycle
from .choices import SnapshotStatus, VMStatus
from .cloudinit import build_seed
from .create_retry import create_retry_elsewhere, is_host_failure
from .disks import disks_publish
from .lifecycle import status_for
from .migration import vm_locate_for_start
from .models import VM, Snapshot, VMDisk, VMNic
from .properties import iotune_of
from .services import (
    RESET_JOB,
    SEED_TARGET,
    TEMPLATE_JOB,
    cdrom_publish,
    nics_publish,
    snapshots_publish,
    vm_publish,
    vm_root_disk,
    vm_set_status,
)
from .specs import CDROM_TARGET, build_spec, disk_spec, domain_metadata

if TYPE_CHECKING:  # the driver class is only needed for annotations
    from portal.hypervisor.driver import LibvirtDriver


def _vm(job: Job) -> VM:
    return VM.objects.select_related("host", "image", "owner").get(pk=int(job.target_id))


# --- hosts that do not answer -------------------------------------------------------------------
# A job never dials a host known to be unreachable: it fails at once (the guard below), and the
# failure clean-ups leave the host alone (the VM shows as unknown; the next reconcile after the host
# answers restores the truth from libvirt, and Delete finishes any clean-up left pending).

def _host_unreachable(host_id: int) -> bool:
    """The host's state now (not the one read when the job started) is not in HostStatus.REACHABLE."""
    status = Host.objects.filter(pk=host_id).values_list("status", flat=True).first()
    return status is not None and status not in HostStatus.REACHABLE


# Jobs that act away from the VM's recorded host: an HA restart exists because that host is dead.
GUARD_EXEMPT_KINDS = frozenset({"vm.ha_restart"})


def vm_job_guard(job: Job) -> None:
    """Registered with portal.jobs (VmsConfig.ready): a VM job whose host does not answer fails at once."""
    if job.target_type != "vm" or not job.kind.startswith("vm.") or job.kind in GUARD_EXEMPT_KINDS:
        return
    row = VM.objects.filter(pk=int(job.target_id)).values_list("host_id", "host__name").first()
    if row is not None and _host_unreachable(row[0]):
        raise HypervisorUnavailable(
            f"Host {row[1]} is not responding; the VM's state is unknown. Try again when the host is back, "
            "or ask an administrator.", detail=f"job {job.kind} refused: host {row[1]} is not reachable")


def _done(job: Job, vm: VM, action: str, message: str) -> None:
    audit(actor=job.actor, via=job.via, action=action, target=vm, job=job, message=message)


def _failed_audit(job: Job, vm: VM, error: str) -> None:
    audit(actor=job.actor, via=job.via, action=job.kind, target=vm, job=job,
          outcome=AuditEvent.Outcome.FAILED, message=error)


def _restore_from_libvirt(job: Job, error: str) -> None:
    """After a failed power action: the VM shows what libvirt says, with the reason (unknown, without
    asking, when its host does not answer)."""
    vm = _vm(job)
    if _host_unreachable(vm.host_id):
        previous = job.params.get("previous", "")
        vm_set_status(vm, VMStatus.UNKNOWN, last_error=error,
                      known_status=previous if previous != VMStatus.UNKNOWN else vm.known_status)
        _failed_audit(job, vm, error)
        return
    try:
        state = get_driver(vm.host.uri).domain_info(str(vm.uuid)).state
        status = status_for(state)
    except NotFound:
        state, status = None, VMStatus.ERROR
    except PortalError:
        state, status = None, job.params.get("previous", VMStatus.ERROR)
    vm_set_status(vm, status, last_error=error, power_state=state or "")
    _failed_audit(job, vm, error)


# --- create -------------------------------------------------------------------------------------

def _copy_images_to_host(ctx: JobContext, vm: VM) -> None:
    """The images the VM is built on (its disks' base, its kernel, the ISO in its drive), copied to its
    host first when they are stored on another one (storage.copies; a copy made already is reused)."""
    images = {vm.image, vm.cdrom}
    for disk in vm.disks.select_related("volume__backing_image", "volume__copy_of"):
        images |= {disk.volume.backing_image, disk.volume.copy_of}
    for image in sorted((i for i in images if i is not None), key=lambda i: i.name):
        if image_copy_ready(image=image, host=vm.host):
            image_copy_ensure(image=image, host=vm.host)  # checks it is still there (else copies it again)
            continue
        step = f"Copying image {image.name} to host {vm.host.name}"
        ctx.progress(2, step)

        def report(done: int, total: int, step: str = step) -> None:
            percent = 100 * done // max(total, 1)  # in the step's text by tens: the job's log has each once
            ctx.progress(2 + 8 * percent // 100, f"{step} ({percent // 10 * 10}%)")

        image_copy_ensure(image=image, host=vm.host, progress=report)


def _create_failed(job: Job, error: str) -> None:
    """A create that failed before the VM existed leaves nothing behind: domain, disks, quota.

    When the clean-up itself cannot finish (host unreachable), the VM stays in `error`, visible
    and counted, and Delete finishes the clean-up later: nothing is ever silently orphaned.
    """
    vm = _vm(job)
    if vm.status != VMStatus.CREATING:  # created, but the start failed: keep the stopped VM
        _failed_audit(job, vm, error)
        return
    problems = []
    if _host_unreachable(vm.host_id):
        problems.append(f"host {vm.host.name} is not responding")
    else:
        try:
            get_driver(vm.host.uri).undefine(str(vm.uuid))
        except PortalError as exc:
            problems.append(exc.message)
        for volume in vm.volumes.select_related("pool__host"):  # their attachments go with them
            try:
                volume_destroy(volume=volume)
            except PortalError as exc:
                problems.append(exc.message)
    if problems:
        vm_set_status(vm, VMStatus.ERROR, last_error=(
            f"Create failed: {error}. Clean-up could not finish ({problems[0]}); Delete removes what is left."))
        _failed_audit(job, vm, f"Create failed, clean-up pending: {error}")
        return
    vm.nics.all().delete()  # their MACs are free again, and their networks no longer in use
    # The media goes too: an ISO in a deleted VM's drive would keep the ISO from being deleted.
    vm_set_status(vm, VMStatus.DELETED, last_error=f"Create failed: {error}", deleted_at=timezone.now(), cdrom=None)
    _failed_audit(job, vm, f"Create failed, nothing was kept: {error}")


@job_handler("vm.create", on_failure=_create_failed)
def create(ctx: JobContext) -> dict:
    """Create the VM on its host; when the host fails it for a host reason, on another one
    (vms.create_retry: the failed host cleaned up, the VM placed again, at most CREATE_RETRY_HOSTS times)."""
    while True:
        try:
            return _create_here(ctx)
        except HypervisorError as exc:
            if not is_host_failure(exc):
                raise
            vm = _vm(ctx.job)
            if vm.status not in (VMStatus.CREATING, VMStatus.STOPPED):
                raise
            create_retry_elsewhere(ctx, vm, exc)  # raises when no other host may take it


def _create_here(ctx: JobContext) -> dict:
    vm = _vm(ctx.job)
    if vm.status != VMStatus.CREATING:
        if vm.status in (VMStatus.RUNNING, VMStatus.STOPPED) and get_driver(vm.host.uri).domain_exists(str(vm.uuid)):
            return {"domain": vm.domain_name, "already_created": True}  # a retry after the work was done
        raise InvalidState(f"{vm.name} is {vm.status}, not creating")
    driver = get_driver(vm.host.uri)
    _copy_images_to_host(ctx, vm)
    ctx.progress(10, "Copying the image's disk" if vm.disks.filter(volume__copy_of__isnull=False).exists()
                 else "Creating the disk")
    for disk in vm.disks.select_related("volume__pool__host", "volume__backing_image"):
        if disk.readonly and disk.target == SEED_TARGET:
            volume_write(volume=disk.volume, data=build_seed(vm))  # cloud-init's NoCloud seed
        else:
            volume_materialize(volume=disk.volume)
    _ensure_networks(vm)
    ctx.progress(40, "Defining the domain")
    domain_type = driver.resolve_domain_type(vm.host.effective_domain_type)
    driver.define(build_spec(vm, domain_type=domain_type))
    VM.objects.filter(pk=vm.pk).update(domain_type=domain_type)
    if not ctx.params.get("start", True):
        vm_set_status(vm, VMStatus.STOPPED, last_error="", power_state=PowerState.SHUTOFF)
        _done(ctx.job, vm, "vm.created", f"Created {vm.name} ({domain_type})")
        return {"domain": vm.domain_name, "domain_type": domain_type}
    ctx.progress(70, "Starting")
    try:
        info = driver.start(str(vm.uuid))
    except HypervisorBusy:
        raise  # still creating: the runner runs this handler again, which resumes where it stopped
    except PortalError as exc:
        vm_set_status(vm, VMStatus.STOPPED, last_error=f"Created, but could not start: {exc.message}",
                      power_state=PowerState.SHUTOFF)
        raise
    vm_set_status(vm, VMStatus.RUNNING, last_error="", power_state=info.state, observed_at=timezone.now())
    _done(ctx.job, vm, "vm.created", f"Created and started {vm.name} ({domain_type})")
    return {"domain": vm.domain_name, "domain_type": domain_type}


# --- power actions: one handler for every row of the lifecycle table ---------------------------

def _wait_powered_off(ctx: JobContext, vm: VM, driver: LibvirtDriver) -> None:
    """After the ACPI signal: wait for the guest to power off, pressing the button again every ~6 s
    (a guest still booting has no ACPI daemon yet and loses the first press)."""
    timeout = settings.STOP_TIMEOUT_SECONDS
    last = [0]

    def tick(elapsed: float) -> None:
        if int(elapsed) // 2 != last[0]:
            last[0] = int(elapsed) // 2
            if last[0] % 3 == 0:
                try:
                    driver.shutdown(str(vm.uuid))
                except PortalError:
                    pass  # powered off in between: the wait sees it
            ctx.progress(10 + int(80 * min(1.0, elapsed / timeout)),
                         f"Waiting for the guest to power off ({int(elapsed)} s)")

    try:
        driver.wait_for_state(str(vm.uuid), {PowerState.SHUTOFF, PowerState.CRASHED}, timeout, on_tick=tick)
    except TimeoutError:
        raise InvalidState(f"{vm.name} did not power off within {timeout} s of the ACPI signal "
                           "(the guest may ignore it). Use Force off to cut the power.") from None


def _ensure_networks(vm: VM) -> None:
    """The VM's networks run on its host before its domain is defined or started (idempotent)."""
    for network in Network.objects.filter(nics__vm=vm).distinct().prefetch_related("reservations"):
        network_ensure_on_host(network=network, host=vm.host)


def power(ctx: JobContext) -> dict:
    """Carry out the power transition of the job's kind: the gateway verb, then the resulting state."""
    transition = lifecycle.by_job_kind(ctx.job.kind)
    vm = _vm(ctx.job)
    driver = get_driver(vm.host.uri)
    ctx.progress(10 if transition.waits_for_power_off else 30, transition.progress)
    if transition.redefines_missing:
        vm = vm_locate_for_start(vm)  # never a second copy: it may live on another host (migrated by hand)
        driver = get_driver(vm.host.uri)
        _ensure_networks(vm)
    if transition.redefines_missing and not driver.domain_exists(str(vm.uuid)):
        # Removed behind our back (drift): define it again from the portal's record.
        driver.define(build_spec(vm, domain_type=driver.resolve_domain_type(vm.host.effective_domain_type)))
    outcome = getattr(driver, transition.verb)(str(vm.uuid))
    if transition.waits_for_power_off:
        _wait_powered_off(ctx, vm, driver)
    state = outcome.state if isinstance(outcome, DomainInfo) else _RESULT_POWER_STATE[transition.result]
    vm_set_status(vm, transition.result, last_error="", power_state=state, observed_at=timezone.now())
    _done(ctx.job, vm, transition.done, transition.done_message.format(name=vm.name))
    return {}


# The power state a successful transition leaves when the gateway verb does not report one.
_RESULT_POWER_STATE: dict[str, PowerState] = {VMStatus.RUNNING: PowerState.RUNNING, VMStatus.STOPPED: PowerState.SHUTOFF,
                       VMStatus.PAUSED: PowerState.PAUSED}

def _cancel_pending_power(job: Job) -> None:
    """A power job cancelled before a worker took it: nothing reached the host, so the VM goes back to the
    state it had when the action was asked for (portal.jobs.services.job_cancel)."""
    vm = _vm(job)
    transition = lifecycle.by_job_kind(job.kind)
    previous = job.params.get("previous")
    if previous and vm.status == (transition.transitional or vm.status):
        vm_set_status(vm, previous)
    audit(actor=job.actor, via=job.via, action=job.kind, target=vm, job=job, outcome=AuditEvent.Outcome.FAILED,
          message=f"{transition.label} {vm.name} cancelled before it started")


for _transition in lifecycle.POWER_ACTIONS.values():
    # Cancellable while pending: a power action queued behind others (Host.max_jobs) can be taken back.
    job_handler(_transition.job_kind, on_failure=_restore_from_libvirt, on_cancel=_cancel_pending_power)(power)


# --- delete -------------------------------------------------------------------------------------

def _delete_failed(job: Job, error: str) -> None:
    vm = _vm(job)
    vm_set_status(vm, VMStatus.ERROR, last_error=f"Delete failed: {error}. Delete again to retry.")
    _failed_audit(job, vm, error)


@job_handler("vm.delete", on_failure=_delete_failed)
def delete(ctx: JobContext) -> dict:
    vm = _vm(ctx.job)
    driver = get_driver(vm.host.uri)
    ctx.progress(20, "Powering off")
    try:
        driver.destroy(str(vm.uuid))
    except NotFound:
        pass
    ctx.progress(40, "Removing the domain")
    driver.undefine(str(vm.uuid))
    ctx.progress(60, "Deleting disks")
    removed = []
    for volume in vm.volumes.select_related("pool__host"):
        if not _deleted_with(volume, vm):
            # A data disk that stays (shareable, or attached to another VM too): only detached (issue #11).
            VMDisk.objects.filter(vm=vm, volume=volume).delete()
            continue
        volume_destroy(volume=volume)
        removed.append(volume.name)
    vm.snapshots.all().delete()  # they lived inside the disks just removed
    vm.nics.all().delete()  # their MACs are free again
    vm_set_status(vm, VMStatus.DELETED, power_state="", deleted_at=timezone.now(), cdrom=None)  # the ISO is free
    _done(ctx.job, vm, "vm.deleted", f"Deleted {vm.name} and {len(removed)} disk(s)")
    return {"removed_volumes": removed}




# --- reset (a stateless pool's VM on return) ----------------------------------------------------

@job_handler(RESET_JOB, on_failure=_restore_from_libvirt)
def reset(ctx: JobContext) -> dict:
    """Power off, make each writable thin clone again from its image (an empty overlay: every change is gone),
    then start again when asked. Idempotent: a retry recreates the overlays once more."""
    vm = _vm(ctx.job)
    driver = get_driver(vm.host.uri)
    ctx.progress(10, "Powering off")
    try:
        driver.destroy(str(vm.uuid))
    except NotFound:
        pass
    ctx.progress(30, "Discarding the disk's changes")
    reset_disks = []
    for disk in vm.disks.filter(readonly=False, volume__backing_image__isnull=False).select_related(
            "volume__pool__host", "volume__backing_image"):
        volume = disk.volume
        try:
            driver.delete_volume(pool=volume.pool.name, name=volume.name)
        except NotFound:
            pass
        Volume.objects.filter(pk=volume.pk).update(path="")  # not made: volume_materialize makes it again
        volume.path = ""
        volume_materialize(volume=volume)
        reset_disks.append(disk.target)
    if not ctx.params.get("start", True):
        vm_set_status(vm, VMStatus.STOPPED, last_error="", power_state=PowerState.SHUTOFF)
    else:
        ctx.progress(70, "Starting")
        _ensure_networks(vm)
        info = driver.start(str(vm.uuid))
        vm_set_status(vm, VMStatus.RUNNING, last_error="", power_state=info.state, observed_at=timezone.now())
    _done(ctx.job, vm, "vm.reset.done", f"Reset {vm.name}: disk(s) {', '.join(reset_disks)} made again from the image")
    return {"disks": reset_disks}


# --- templates ----------------------------------------------------------------------------------

def _template_failed(job: Job, error: str) -> None:
    """No half-made template stays: its copy goes (no Image row was written); the VM is as it was."""
    pool = StoragePool.objects.select_related("host").filter(pk=job.params.get("pool_id")).first()
    if pool is not None and job.params.get("volume_name") and not _host_unreachable(pool.host_id):
        try:
            image_volume_discard(pool=pool, name=job.params["volume_name"])
        except PortalError:
            pass  # the host is unreachable: the next attempt with that name removes it first
    vm = _vm(job)
    _failed_audit(job, vm, f"Making template {job.params.get('name')} failed: {error}")
    vm_publish(vm)


@job_handler(TEMPLATE_JOB, on_failure=_template_failed)
def template(ctx: JobContext) -> dict:
    vm = _vm(ctx.job)
    p = ctx.job.params
    done = Image.objects.filter(pool_id=p["pool_id"], volume_name=p["volume_name"]).first()
    if done is not None:  # a retry after the work was done
        return {"template": done.name, "image_id": done.pk, "already_made": True}
    if vm.status != VMStatus.STOPPED:
        raise InvalidState(f"{vm.name} is {vm.get_status_display().lower()}: a template is made from a stopped VM.")
    disk = (vm.disks.select_related("volume__pool__host").filter(pk=p["disk_id"]).first() if p.get("disk_id")
            else vm_root_disk(vm))
    if disk is None:
        raise NotFound(f"The disk of {vm.name} to make the template of is gone.")
    size_gib = disk.volume.capacity_gib
    owner = User.objects.filter(pk=p.get("owner_id")).first() if p.get("owner_id") else None
    if p.get("owner_id") and owner is None:
        raise NotFound("The template's owner no longer exists.")
    ctx.progress(10, f"Copying disk {disk.target} of {vm.name} ({size_gib} GiB, backing chain flattened)")
    image = image_from_volume(
        actor=ctx.job.actor, via=ctx.job.via, volume=disk.volume, name=p["name"], title=p.get("title", ""),
        owner=owner, description=p.get("description", ""), visibility=p.get("visibility", Image.Visibility.PRIVATE),
        groups=list(Group.objects.filter(pk__in=p.get("groups") or [])), like=vm.image, default_vcpus=vm.vcpus,
        default_memory_mib=vm.memory_mib, min_disk_gib=size_gib, source=f"vm:{vm.name}",
        volume_name=p["volume_name"])
    ctx.progress(95, f"Listed template {image.name}")
    _done(ctx.job, vm, "vm.templated", f"Made template {image.name} of {vm.name} "
                                       f"({image.size_bytes} bytes, {image.actual_size_bytes} stored)")
    vm_publish(vm)
    return {"template": image.name, "image_id": image.pk, "size_bytes": image.size_bytes,
            "actual_size_bytes": image.actual_size_bytes, "checksum_sha256": image.checksum_sha256}


# --- snapshots ----------------------------------------------------------------------------------

def _snapshot(job: Job) -> Snapshot | None:
    return Snapshot.objects.filter(pk=job.params.get("snapshot_id")).first()


def _snapshot_create_failed(job: Job, error: str) -> None:
    """Nothing half-made stays: the snapshot (if libvirt made it) and its row go."""
    vm = _vm(job)
    snapshot = _snapshot(job)
    if snapshot is not None:  # gone already when the name was taken on the host: that one is not ours
        try:
            if not _host_unreachable(vm.host_id):
                get_driver(vm.host.uri).snapshot_delete(str(vm.uuid), job.params["snapshot"])
        except PortalError:
            pass  # the domain or host is gone: the row goes; a retake of the name is refused while one is there
        snapshot.delete()
    _failed_audit(job, vm, f"Snapshot {job.params['snapshot']} failed: {error}")
    snapshots_publish(vm)


@job_handler("vm.snapshot.create", on_failure=_snapshot_create_failed)
def snapshot_create(ctx: JobContext) -> dict:
    vm = _vm(ctx.job)
    snapshot = _snapshot(ctx.job)
    if snapshot is None:
        raise NotFound("The snapshot was deleted before it was taken.")
    ctx.progress(20, "Taking the snapshot" + (" with the memory" if vm.status in VMStatus.ACTIVE else ""))
    driver = get_driver(vm.host.uri)
    retry = ctx.job.attempts > 1 or ctx.retry > 0  # a retry finds the snapshot its first attempt made
    if not retry and any(s.name == snapshot.name for s in driver.list_snapshots(str(vm.uuid))):
        snapshot.delete()  # the host's snapshot of that name is not ours: leave it alone
        raise Conflict(f"A snapshot named {snapshot.name} exists on the host already (made outside the portal); "
                       "choose another name.")
    info = driver.snapshot_create(str(vm.uuid), name=snapshot.name, description=snapshot.description, adopt=retry)
    Snapshot.objects.filter(pk=snapshot.pk).update(
        status=SnapshotStatus.READY, has_memory=info.has_memory, vm_state=status_for(info.state),
        taken_at=timezone.now(), size_bytes=snapshot_measured_size(driver, vm, snapshot))
    what = "disks and memory" if info.has_memory else "disks"
    _done(ctx.job, vm, "vm.snapshot.created", f"Took snapshot {snapshot.name} of {vm.name} ({what})")
    snapshots_publish(vm)
    return {"snapshot": snapshot.name, "has_memory": info.has_memory}


def _snapshot_revert_failed(job: Job, error: str) -> None:
    Snapshot.objects.filter(pk=job.params.get("snapshot_id")).update(status=SnapshotStatus.READY)
    _restore_from_libvirt(job, f"Revert to snapshot {job.params['snapshot']} failed: {error}")
    snapshots_publish(_vm(job))


@job_handler("vm.snapshot.revert", on_failure=_snapshot_revert_failed)
def snapshot_revert(ctx: JobContext) -> dict:
    vm = _vm(ctx.job)
    snapshot = _snapshot(ctx.job)
    if snapshot is None:
        raise NotFound("The snapshot no longer exists.")
    ctx.progress(20, f"Reverting to {snapshot.name}")
    driver = get_driver(vm.host.uri)
    info = driver.snapshot_revert(str(vm.uuid), snapshot.name)
    _nics_after_revert(vm, driver, running=info.state.is_active)
    note = _media_after_revert(vm, driver, running=info.state.is_active)
    Snapshot.objects.filter(pk=snapshot.pk).update(status=SnapshotStatus.READY, reverted_at=timezone.now())
    vm_set_status(vm, status_for(info.state), last_error=note, power_state=info.state, observed_at=timezone.now())
    snapshots_publish(vm)
    if note:
        cdrom_publish(vm)
    _done(ctx.job, vm, "vm.snapshot.reverted", f"Reverted {vm.name} to snapshot {snapshot.name} "
                                               f"(now {status_for(info.state)}){' ' + note if note else ''}")
    return {"snapshot": snapshot.name, "state": str(info.state)}


def _nics_after_revert(vm: VM, driver: LibvirtDriver, *, running: bool) -> None:
    """A revert brings back the domain definition saved in the snapshot, with the NICs of that time.
    The portal's NICs are the truth: the definition is written again from the record, and a running
    guest gets the NICs added since (hot-plug) and loses the ones removed since (hot-unplug).

    An adopted VM's definition is its own (firmware, devices, boot the portal did not choose): it is
    never rewritten from the portal's record; its NICs are brought in line device by device instead,
    in the definition (and the running guest), and the portal's metadata is written again.
    """
    if vm.adopted_at is not None:
        driver.set_metadata(str(vm.uuid), domain_metadata(vm))
        if not driver.capabilities().nic_hotplug:
            return
    else:
        domain_type = vm.domain_type or driver.resolve_domain_type(vm.host.effective_domain_type)
        driver.define(build_spec(vm, domain_type=domain_type))
        if not running or not driver.capabilities().nic_hotplug:
            return
    wanted = {n.mac: n for n in vm.nics.select_related("network")}
    for nic in wanted.values():
        driver.attach_interface(str(vm.uuid), NicSpec(network=nic.network.libvirt_name, mac=nic.mac, model=nic.model))
    for live in driver.domain_interfaces(str(vm.uuid), inactive=not running):
        if live.mac not in wanted and live.network:
            driver.detach_interface(str(vm.uuid), NicSpec(network=live.network, mac=live.mac,
                                                          model=live.model or "virtio"), timeout=10)


def _media_after_revert(vm: VM, driver: LibvirtDriver, *, running: bool) -> str:
    """A revert brings back the CD-ROM media of the snapshot's time, which the record may no longer hold
    (and an ISO the record does not hold is not protected from deletion). The record is the truth: the
    drive gets the record's media back, in the definition and the running guest, for adopted VMs too.
    Media that is not a portal image, in a drive the record holds empty, is the domain's own and stays.

    When the drive cannot follow (a host without live media change), the record follows the drive
    instead, so the portal image in it stays protected; the returned note says so ("" when all is well).
    """
    if not vm.cdrom_drive:
        return ""
    uuid = str(vm.uuid)
    target = vm.cdrom_target or CDROM_TARGET
    media = vm.cdrom
    wanted = image_media_path(image=media, host=vm.host) if media else None  # its copy on another host
    config = [c.path for c in driver.domain_cdroms(uuid, inactive=True) if c.target == target]
    if not config:
        return ""  # the snapshot predates the drive: nothing in it (the next insert adds it)
    live = [c.path for c in driver.domain_cdroms(uuid) if c.target == target] if running else []
    if all(p == wanted for p in config + live):
        return ""
    held = {p for p in config + live if p and p != wanted}
    portal_held = Image.objects.filter(Q(pool__host=vm.host, path__in=held)
                                       | Q(host_copies__pool__host=vm.host, host_copies__path__in=held)).distinct()
    if media is None and not portal_held.exists():
        return ""  # the domain's own media (not the portal's): left in the drive
    try:
        driver.change_media(uuid, target=target, path=wanted, fmt=media.format if media else "raw")
    except PortalError as exc:
        image = portal_held.first() if media is None else None
        if image is None:
            return f"The CD-ROM drive could not be set back to the VM's media: {exc.message}"
        VM.objects.filter(pk=vm.pk).update(cdrom=image)
        vm.cdrom = image
        return (f"The snapshot's CD {image.name} is in the drive again and could not be changed back "
                f"({exc.message}); it is now the VM's media.")
    return ""


def _snapshot_delete_failed(job: Job, error: str) -> None:
    vm = _vm(job)
    Snapshot.objects.filter(pk=job.params.get("snapshot_id")).update(status=SnapshotStatus.READY)
    _failed_audit(job, vm, f"Deleting snapshot {job.params['snapshot']} failed: {error}")
    snapshots_publish(vm)


@job_handler("vm.snapshot.delete", on_failure=_snapshot_delete_failed)
def snapshot_delete(ctx: JobContext) -> dict:
    vm = _vm(ctx.job)
    name = ctx.job.params["snapshot"]
    ctx.progress(30, f"Deleting snapshot {name}")
    get_driver(vm.host.uri).snapshot_delete(str(vm.uuid), name)
    Snapshot.objects.filter(pk=ctx.job.params.get("snapshot_id")).delete()
    _done(ctx.job, vm, "vm.snapshot.deleted", f"Deleted snapshot {name} of {vm.name}")
    snapshots_publish(vm)
    return {"snapshot": name}


# --- disk ---------------------------------------------------------------------------------------

def _grow_failed(job: Job, error: str) -> None:
    """The disk keeps its old size: the VM row (boot disk) or the data disk's volume, and with it the quota
    charge, go back to it."""
    vm = _vm(job)
    disk = _grown_disk(job, vm)
    if disk is not None and disk.volume.owner_id is not None:  # a data disk: charged through its volume
        Volume.objects.filter(pk=disk.volume_id, capacity_gib=job.params["disk_gib"]).update(
            capacity_gib=job.params["previous_gib"])
        _failed_audit(job, vm, f"Growing disk {job.params.get('label') or disk.target} to {job.params['disk_gib']} "
                               f"GiB failed: {error}{_saved_properties_note(job)}")
        disks_publish(vm)
        return
    VM.objects.filter(pk=vm.pk, disk_gib=job.params["disk_gib"]).update(disk_gib=job.params["previous_gib"])
    vm.refresh_from_db()
    _failed_audit(job, vm, f"Growing the disk to {job.params['disk_gib']} GiB failed: {error}"
                           f"{_saved_properties_note(job)}")
    vm_publish(vm)


def _saved_properties_note(job: Job) -> str:
    return " (the disk's new properties are saved: they apply when the VM is next defined)" \
        if job.params.get("apply_properties") else ""


def _grown_disk(job: Job, vm: VM) -> VMDisk | None:
    """The disk a grow job grows: the one it names (`disk_id`), else (jobs queued before disks had ids in
    their params) the VM's boot disk."""
    if job.params.get("disk_id"):
        return VMDisk.objects.select_related("volume__pool").filter(pk=job.params["disk_id"], vm=vm).first()
    return vm_root_disk(vm)


@job_handler("vm.disk.grow", on_failure=_grow_failed)
def grow_disk(ctx: JobContext) -> dict:
    vm = _vm(ctx.job)
    # The disk named in the job (any writable disk: issue #11), or the boot disk.
    disk = _grown_disk(ctx.job, vm)
    if disk is None:
        raise NotFound(f"The disk of {vm.name} to grow is gone.")
    volume = disk.volume
    size = ctx.job.params["disk_gib"]
    ctx.progress(30, f"Growing disk {disk.target} to {size} GiB")
    get_driver(vm.host.uri).grow_disk(str(vm.uuid), target=disk.target, pool=volume.pool.name, volume=volume.name,
                                      capacity_bytes=size * 1024**3)
    Volume.objects.filter(pk=volume.pk).update(capacity_gib=size)
    if ctx.job.params.get("apply_properties"):  # a PATCH that also changed its properties (vms.disks.vm_disk_change)
        ctx.progress(80, f"Updating disk {disk.target}")
        disk.refresh_from_db()
        _apply_disk_properties(vm, disk)
    if volume.owner_id is not None:
        _done(ctx.job, vm, "vm.disk.grown", f"Grew disk {volume.label} ({disk.target}) of {vm.name} to {size} GiB")
        disks_publish(vm)
    else:
        _done(ctx.job, vm, "vm.disk.grown", f"Grew the disk of {vm.name} to {size} GiB")
    return {"disk_gib": size, "target": disk.target}


# --- NICs ---------------------------------------------------------------------------------------

def _redefine_stopped(vm: VM, driver: LibvirtDriver) -> None:
    """Write a stopped domain's definition again from the portal's record: how NICs change on a driver
    that cannot edit a domain's devices (libvirt's test driver has no attach/detach at all)."""
    driver.define(build_spec(vm, domain_type=driver.resolve_domain_type(vm.host.effective_domain_type)))


def _nic(job: Job) -> VMNic | None:
    return VMNic.objects.select_related("network", "vm__host").filter(pk=job.params.get("nic_id")).first()


def _nic_add_failed(job: Job, error: str) -> None:
    """Nothing half-added stays: the NIC leaves the domain (if libvirt took it) and its row goes."""
    vm = _vm(job)
    nic = _nic(job)
    if nic is not None:
        spec = NicSpec(network=nic.network.libvirt_name, mac=nic.mac, model=nic.model)
        VMNic.objects.filter(pk=nic.pk).delete()
        driver = get_driver(vm.host.uri)
        try:
            if _host_unreachable(vm.host_id):
                raise HypervisorUnavailable(detail=f"host {vm.host.name} is not responding")
            if driver.capabilities().nic_hotplug:
                driver.detach_interface(str(vm.uuid), spec, timeout=5)
            elif driver.domain_exists(str(vm.uuid)) and not driver.domain_info(str(vm.uuid)).state.is_active:
                _redefine_stopped(vm, driver)
        except PortalError:
            pass
    _failed_audit(job, vm, f"Adding NIC {job.params.get('mac')} failed: {error}")
    nics_publish(vm)


@job_handler("vm.nic.add", on_failure=_nic_add_failed)
def nic_add(ctx: JobContext) -> dict:
    vm = _vm(ctx.job)
    nic = _nic(ctx.job)
    if nic is None:
        raise NotFound("The NIC was removed before it was added.")
    ctx.progress(20, f"Starting network {nic.network.name} on the host")
    network_ensure_on_host(network=nic.network, host=vm.host)
    ctx.progress(50, "Attaching the NIC")
    driver = get_driver(vm.host.uri)
    spec = NicSpec(network=nic.network.libvirt_name, mac=nic.mac, model=nic.model)
    if driver.domain_exists(str(vm.uuid)):
        running = driver.domain_info(str(vm.uuid)).state.is_active
        hotplug = driver.capabilities().nic_hotplug
        if running and not hotplug:
            raise Conflict(f"The host of {vm.name} cannot hot-plug NICs; stop the VM and add it again.")
        if hotplug:
            driver.attach_interface(str(vm.uuid), spec)
        else:
            _redefine_stopped(vm, driver)  # the record holds the new NIC already
    VMNic.objects.filter(pk=nic.pk).update(status=VMNic.Status.ATTACHED)
    _done(ctx.job, vm, "vm.nic.added", f"Added NIC {nic.mac} on {nic.network.name} to {vm.name}")
    nics_publish(vm)
    return {"mac": nic.mac, "network": nic.network.name}


def _nic_remove_failed(job: Job, error: str) -> None:
    VMNic.objects.filter(pk=job.params.get("nic_id")).update(status=VMNic.Status.ATTACHED)
    vm = _vm(job)
    _failed_audit(job, vm, f"Removing NIC {job.params.get('mac')} failed: {error}")
    nics_publish(vm)


@job_handler("vm.nic.remove", on_failure=_nic_remove_failed)
def nic_remove(ctx: JobContext) -> dict:
    vm = _vm(ctx.job)
    nic = _nic(ctx.job)
    if nic is None:
        return {"mac": ctx.job.params.get("mac"), "already_removed": True}
    ctx.progress(30, "Detaching the NIC")
    driver = get_driver(vm.host.uri)
    released = True
    if driver.domain_exists(str(vm.uuid)):
        if driver.capabilities().nic_hotplug:
            released = driver.detach_interface(
                str(vm.uuid), NicSpec(network=nic.network.libvirt_name, mac=nic.mac, model=nic.model),
                timeout=settings.NIC_DETACH_TIMEOUT_SECONDS)
        elif driver.domain_info(str(vm.uuid)).state.is_active:
            raise Conflict(f"The host of {vm.name} cannot hot-unplug NICs; stop the VM and remove it again.")
        else:
            _redefine_stopped(vm, driver)  # a detaching NIC is no longer in the record's spec
    nic.delete()
    note = "" if released else " (the running guest has not released it yet: it is gone after the next stop)"
    _done(ctx.job, vm, "vm.nic.removed", f"Removed NIC {nic.mac} from {vm.name}{note}")
    nics_publish(vm)
    return {"mac": nic.mac, "released": released}


# --- CD-ROM -------------------------------------------------------------------------------------

def _media_failed(job: Job, error: str) -> None:
    """The drive keeps what it had: the row's media (and drive) go back to before the request."""
    vm = _vm(job)
    VM.objects.filter(pk=vm.pk).update(cdrom_id=job.params.get("previous_cdrom_id"),
                                       cdrom_drive=bool(job.params.get("previous_drive")))
    vm.refresh_from_db()
    what = f"Inserting {job.params.get('image')}" if job.kind == "vm.cdrom.insert" else "Ejecting the CD"
    _failed_audit(job, vm, f"{what} failed: {error}")
    cdrom_publish(vm)


def media_change(ctx: JobContext) -> dict:
    """Make the domain's CD-ROM drive hold what the record says (the media, or an empty tray)."""
    vm = _vm(ctx.job)
    image_id = ctx.job.params.get("image_id")
    media = Image.objects.filter(pk=image_id).first() if image_id else None
    if image_id and media is None:
        raise NotFound(f"The ISO {ctx.job.params.get('image')} was deleted meanwhile.")
    driver = get_driver(vm.host.uri)
    uuid = str(vm.uuid)
    ctx.progress(30, "Inserting the CD" if media else "Ejecting the CD")
    if driver.domain_exists(uuid):  # else: defined from the record at the next start
        running = driver.domain_info(uuid).state.is_active
        if vm.adopted_at is not None and ctx.job.params.get("add_drive") and not running:
            _place_adopted_drive(vm, driver)
        target = vm.cdrom_target or CDROM_TARGET
        # The ISO's copy on the VM's host (made now if needed), or the ISO itself on its own host.
        path, fmt = (image_copy_ensure(image=media, host=vm.host).path, media.format) if media else (None, "raw")
        has_drive = any(c.target == target for c in driver.domain_cdroms(uuid, inactive=not running))
        if has_drive:
            driver.change_media(uuid, target=target, path=path, fmt=fmt)
        elif running:
            raise Conflict(f"{vm.name} was started before its CD-ROM drive was added; stop it and insert again.")
        elif vm.adopted_at is not None:
            # An adopted domain's definition is its own: only the drive is added, nothing else changes.
            driver.attach_cdrom(uuid, CdromSpec(target=target, bus=vm.cdrom_bus or "ide", path=path, format=fmt))
        else:
            _redefine_stopped(vm, driver)  # adds the drive (and its media) from the record
    if media:
        _done(ctx.job, vm, "vm.cdrom.inserted", f"Inserted {media.name} into the CD-ROM drive of {vm.name}")
    else:
        _done(ctx.job, vm, "vm.cdrom.ejected", f"Ejected the CD of {vm.name}; it boots from its disk")
    cdrom_publish(vm)
    vm_publish(vm)
    return {"image": media.name if media else None}


def _place_adopted_drive(vm: VM, driver: LibvirtDriver) -> None:
    """Where an adopted VM's new CD-ROM drive goes: a drive the domain has already (added by hand since the
    adoption), else a free target on a bus its machine has (SATA on q35, which has no IDE; IDE hdc
    otherwise). Recorded on the VM, so a domain re-created from the record has it in the same place."""
    definition = driver.domain_definition(str(vm.uuid))
    existing = next((d for d in definition.disks if d.device == "cdrom"), None)
    if existing is not None and existing.target:
        target, bus = existing.target, existing.bus or "ide"
    else:
        used = {d.target for d in definition.disks}
        bus, prefix, order = (("sata", "sd", "abcdefghijklmnopqrstuvwxyz") if "q35" in definition.machine
                              else ("ide", "hd", "cdab"))
        target = next((prefix + c for c in order if prefix + c not in used), "")
        if not target:
            raise Conflict(f"{vm.name} has no free {bus.upper()} slot for a CD-ROM drive.")
    VM.objects.filter(pk=vm.pk).update(cdrom_target=target, cdrom_bus=bus)
    vm.cdrom_target, vm.cdrom_bus = target, bus


for _kind in ("vm.cdrom.insert", "vm.cdrom.eject"):
    job_handler(_kind, on_failure=_media_failed)(media_change)


# --- disks hot-plug (issue #11) ---------------------------------------------------------------------
# vm.disk.add / vm.disk.remove / vm.disk.update on a VM, volume.delete on a detached data disk. The record
# (vms.disks) is written first; these make libvirt follow: the running guest (hot-plug) and the definition.

def _deleted_with(volume: Volume, vm: VM) -> bool:
    """Whether a deleted VM's volume goes with it: its own disks (boot, seed: no owner) always; a data disk
    only when the VM's owner (a team VM: its group) owns it, it is not shareable and no other VM has it
    attached. Other data disks stay, detached: a shareable one, or one of someone else (a team member's
    own disk attached to the team's VM is not the team's to destroy) - counted on its owner's quota until
    they delete it."""
    if volume.owner_id is None:
        return True
    same_owner = volume.group_id == vm.group_id if vm.group_id else \
        (volume.owner_id == vm.owner_id and volume.group_id is None)
    if not same_owner:
        return False
    others = VMDisk.objects.filter(volume=volume).exclude(vm=vm).exclude(vm__status=VMStatus.DELETED)
    return not volume.shareable and not others.exists()


def _disk_row(job: Job) -> VMDisk | None:
    return VMDisk.objects.select_related("volume__pool__host", "vm__host").filter(pk=job.params.get("disk_id")).first()


def _disk_add_failed(job: Job, error: str) -> None:
    """Nothing half-attached stays: the disk leaves the domain (if libvirt took it), its row goes, and a
    volume the job created is deleted (its quota charge with it)."""
    vm = _vm(job)
    disk = _disk_row(job)
    problem = ""
    if disk is not None:
        volume = disk.volume
        target = disk.target
        disk.delete()
        try:
            if _host_unreachable(vm.host_id):
                raise HypervisorUnavailable(detail=f"host {vm.host.name} is not responding")
            driver = get_driver(vm.host.uri)
            if driver.domain_exists(str(vm.uuid)):
                if driver.capabilities().disk_hotplug:
                    driver.detach_disk(str(vm.uuid), target, timeout=10)
                elif not driver.domain_info(str(vm.uuid)).state.is_active:
                    _redefine_stopped(vm, driver)
            if job.params.get("created"):
                volume_destroy(volume=Volume.objects.select_related("pool__host").get(pk=volume.pk))
        except PortalError as exc:
            problem = f" (clean-up: {exc.message}; the disk {volume.label} is kept, detached: delete it later)"
    _failed_audit(job, vm, f"Adding disk {job.params.get('label')} failed: {error}{problem}")
    disks_publish(vm)


@job_handler("vm.disk.add", on_failure=_disk_add_failed)
def disk_add(ctx: JobContext) -> dict:
    vm = _vm(ctx.job)
    disk = _disk_row(ctx.job)
    if disk is None:
        raise NotFound("The disk was removed before it was added.")
    volume = disk.volume
    if ctx.job.params.get("created"):
        ctx.progress(20, f"Creating disk {volume.label} ({volume.capacity_gib} GiB)")
        volume_materialize(volume=volume)
        disk.volume.refresh_from_db()
    ctx.progress(50, f"Attaching disk {volume.label} as {disk.target}")
    driver = get_driver(vm.host.uri)
    uuid = str(vm.uuid)
    live = False
    if driver.domain_exists(uuid):  # else: defined from the record at the next start
        live = driver.domain_info(uuid).state.is_active
        hotplug = driver.capabilities().disk_hotplug
        if live and not hotplug:
            raise Conflict(f"The host of {vm.name} cannot hot-plug disks; stop the VM and add it again.")
        if hotplug:
            driver.attach_disk(uuid, disk_spec(disk), live=live)
        else:
            _redefine_stopped(vm, driver)  # the record holds the new disk already
    VMDisk.objects.filter(pk=disk.pk).update(status=VMDisk.Status.ATTACHED)
    how = " (hot-plugged)" if live else ""
    _done(ctx.job, vm, "vm.disk.added", f"Added disk {volume.label} to {vm.name} as {disk.target}{how}")
    disks_publish(vm)
    return {"target": disk.target, "label": volume.label, "live": live}


def _disk_remove_failed(job: Job, error: str) -> None:
    VMDisk.objects.filter(pk=job.params.get("disk_id")).update(status=VMDisk.Status.ATTACHED)
    vm = _vm(job)
    _failed_audit(job, vm, f"Removing disk {job.params.get('label')} failed: {error}")
    disks_publish(vm)


@job_handler("vm.disk.remove", on_failure=_disk_remove_failed)
def disk_remove(ctx: JobContext) -> dict:
    vm = _vm(ctx.job)
    disk = _disk_row(ctx.job)
    if disk is None:
        return {"target": ctx.job.params.get("target"), "already_removed": True}
    volume = disk.volume
    driver = get_driver(vm.host.uri)
    uuid = str(vm.uuid)
    ctx.progress(30, f"Detaching disk {volume.label} ({disk.target})")
    if driver.domain_exists(uuid):
        if driver.capabilities().disk_hotplug:
            timeout = settings.DISK_DETACH_TIMEOUT_SECONDS
            if not driver.detach_disk(uuid, disk.target, timeout=timeout):
                raise Conflict(f"The guest of {vm.name} did not release disk {disk.target} within {timeout} s; it "
                               "stays attached. Unmount it in the guest and try again, or stop the VM first.")
        elif driver.domain_info(uuid).state.is_active:
            raise Conflict(f"The host of {vm.name} cannot hot-unplug disks; stop the VM and remove it again.")
        else:
            _redefine_stopped(vm, driver)  # a detaching disk is no longer in the record's spec
    disk.delete()
    deleted = False
    if ctx.job.params.get("delete_volume"):
        if VMDisk.objects.filter(volume=volume).exclude(vm__status=VMStatus.DELETED).exists():
            note = " (kept: it was attached to another VM meanwhile)"
        else:
            ctx.progress(70, f"Deleting disk {volume.label}")
            volume_destroy(volume=Volume.objects.select_related("pool__host").get(pk=volume.pk))
            deleted, note = True, " and deleted it"
    else:
        note = ""
    _done(ctx.job, vm, "vm.disk.removed", f"Detached disk {volume.label} ({disk.target}) from {vm.name}{note}")
    disks_publish(vm)
    return {"target": disk.target, "label": volume.label, "deleted": deleted}


def _disk_update_failed(job: Job, error: str) -> None:
    vm = _vm(job)
    previous = job.params.get("previous_properties")
    if isinstance(previous, dict):  # the definition kept the old device: so does the row (trial #1)
        VMDisk.objects.filter(pk=job.params.get("disk_id"), vm=vm).update(properties=previous)
        _failed_audit(job, vm, f"Changing disk {job.params.get('target')} failed: {error} (its previous "
                               "properties are back)")
    else:
        _failed_audit(job, vm, f"Changing disk {job.params.get('target')} failed: {error} (the properties are "
                               "saved: they apply when the VM is next defined)")
    disks_publish(vm)


def _apply_disk_properties(vm: VM, disk: VMDisk) -> bool:
    """Write the disk's stored properties to the definition; True when the I/O limits changed live too."""
    driver = get_driver(vm.host.uri)
    if not driver.domain_exists(str(vm.uuid)):
        return False
    driver.replace_disk_config(str(vm.uuid), disk_spec(disk))
    # I/O limits change on the running guest too (libvirt's setBlockIoTune); the rest waits for a start.
    if driver.domain_info(str(vm.uuid)).state.is_active and driver.capabilities().real_guests:
        driver.set_block_iotune(str(vm.uuid), disk.target, iotune_of(disk.properties or {}), live=True)
        return True
    return False


@job_handler("vm.disk.update", on_failure=_disk_update_failed)
def disk_update(ctx: JobContext) -> dict:
    """The definition gets the disk's new properties; a running guest keeps the old ones until its next start."""
    vm = _vm(ctx.job)
    disk = _disk_row(ctx.job)
    if disk is None:
        return {"already_removed": True}
    ctx.progress(40, f"Updating disk {disk.target}")
    live = _apply_disk_properties(vm, disk)
    _done(ctx.job, vm, "vm.disk.updated", f"Updated the properties of disk {disk.target} of {vm.name}")
    disks_publish(vm)
    return {"target": disk.target, "properties": disk.properties, "iotune_live": live}


def _volume_delete_failed(job: Job, error: str) -> None:
    audit(actor=job.actor, via=job.via, action=job.kind, target_type="volume", target_id=job.target_id,
          target_name=str(job.params.get("label", "")), job=job, outcome=AuditEvent.Outcome.FAILED, message=error)


@job_handler("volume.delete", on_failure=_volume_delete_failed)
def volume_delete(ctx: JobContext) -> dict:
    volume = Volume.objects.select_related("pool__host").filter(pk=ctx.job.params.get("volume_id")).first()
    label = ctx.job.params.get("label", "")
    if volume is None:
        return {"label": label, "already_deleted": True}
    if VMDisk.objects.filter(volume=volume).exclude(vm__status=VMStatus.DELETED).exists():
        raise Conflict(f"Disk {label} was attached to a VM meanwhile: it is kept.")
    ctx.progress(40, f"Deleting disk {label}")
    volume_destroy(volume=volume)
    audit(actor=ctx.job.actor, via=ctx.job.via, action="volume.deleted", target_type="volume",
          target_id=ctx.job.target_id, target_name=label, job=ctx.job, message=f"Deleted disk {label}")
    return {"label": label}
# --- snapshot space (issue #11) ------------------------------------------------------------------

import logging  # noqa: E402  (self-contained block)

from .services import snapshots_charged  # noqa: E402


def snapshot_measured_size(driver: LibvirtDriver, vm: VM, snapshot: Snapshot) -> int:
    """What the snapshot just taken adds: the space of the VM's disks' files now (LibvirtDriver.
    snapshot_space) less what its other snapshots are charged (so data an earlier snapshot pinned is not
    counted twice; after a snapshot was deleted, the next one takes up what the deleted one's charge
    left uncounted). The estimate reserved when it was asked for (still on the row) where nothing can be
    measured: libvirt's test driver, or an error."""
    try:
        measured = driver.snapshot_space(str(vm.uuid))
    except PortalError as exc:
        logging.getLogger(__name__).warning("measuring snapshot %s of %s: %s", snapshot.name, vm.name, exc)
        measured = 0
    if not measured:
        return snapshot.size_bytes
    return max(0, measured - snapshots_charged(vm, exclude=snapshot))
