"""A VM's disks: add a new data disk or attach an existing one, remove (detach, optionally delete),
grow, change properties; hot-plugged on a running VM. Every rule is here; doors call these.

A VM has its boot disk (and, for cloud-init images, a read-only seed): its own volumes, without an
owner, counted by the VM's `disk_gib`. Data disks are volumes with an owner (and the VM's group, if
any) and a label: they count against that owner's (or group's) disk quota themselves
(storage.selectors.data_volume_quota_usage), can be detached, outlive the VM and be attached to
another one. A shareable data disk may be attached to several VMs, but then only read-only.

The record phase (here) locks the VM, checks, writes the attachment in a transitional status
(attaching, detaching) and queues one job (vms.jobs: vm.disk.add, vm.disk.remove, vm.disk.grow,
volume.delete); one disk change at a time per VM, none while another job runs on it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from portal.actors import Actor, is_admin, is_signed_in
from portal.audit import audit
from portal.choices import JobStatus
from portal.events import publish
from portal.exceptions import Conflict, InvalidState, NotFound, PermissionDenied, ValidationFailed
from portal.hypervisor import get_driver
from portal.jobs import job_create
from portal.models import AuditEvent, Job
from quotas.services import quota_reserve
from storage.models import StoragePool, Volume
from storage.pools import pool_for_host

from .access import check_action
from .choices import VMStatus
from .models import VM, VMDisk
from .properties import DISK, IOTUNE_KEYS, check_boot_order, validate_properties
from .services import (
    NIC_STATES,
    SEED_TARGET,
    _active_job,
    _busy_text,
    _check_actor,
    _lock_visible,
    _refuse_while_busy,
    _snapshot_busy,
    _vm_groups,
    vm_grow_disk,
    vm_root_disk,
)
from .validation import parse_id, validate_size

DISK_ADD, DISK_REMOVE, DISK_GROW, DISK_UPDATE = "vm.disk.add", "vm.disk.remove", "vm.disk.grow", "vm.disk.update"
PREVIOUS_PROPERTIES = "previous_properties"  # a vm.disk.update job's: put back in the row when it fails
APPLY_PROPERTIES = "apply_properties"  # a grow job's param: write the disk's properties to the definition too
VOLUME_DELETE = "volume.delete"  # a detached data disk deleted (target: the volume)
BUSES = tuple(VMDisk.Bus.values)  # virtio (virtio-blk: vdX), scsi (the VM's one virtio-SCSI controller: sdX)
_PREFIX: dict[str, str] = {VMDisk.Bus.VIRTIO: "vd", VMDisk.Bus.SCSI: "sd"}
# vda: the boot disk, vdz: the cloud-init seed; SCSI disks from sda.
_LETTERS: dict[str, str] = {VMDisk.Bus.VIRTIO: "bcdefghijklmnopqrstuvwxy", VMDisk.Bus.SCSI: "abcdefghijklmnopqrstuvwxyz"}
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
TARGET_LIKE_RE = re.compile(r"^(vd|sd|hd|xvd)[a-z]+$", re.IGNORECASE)


def disks_publish(vm: VM) -> None:
    """Tell pages showing the VM that its disks changed (they fetch the panel again)."""
    publish(_vm_groups(vm), {"kind": "vm_disks", "id": vm.pk})


# --- reads --------------------------------------------------------------------------------------

def data_volumes_visible(actor: Actor) -> QuerySet[Volume]:
    """The data disks the actor may see and attach: their own, their groups', shareable ones they may use."""
    qs = Volume.objects.filter(owner__isnull=False).select_related("pool__host", "owner", "group")
    if not is_signed_in(actor):
        return qs.none()
    if is_admin(actor):
        return qs
    user: User = actor
    # `group` is a foreign key: an id subquery, never a join, so no DISTINCT over whole rows (issue #13).
    return qs.filter(Q(owner=user, group__isnull=True) | Q(group__in=user.groups.all()))


def is_data_disk(disk: VMDisk) -> bool:
    """A data disk (owned, detachable); else the VM's own: its boot disk, its seed, an adopted VM's disks."""
    return disk.volume.owner_id is not None


def volume_users(volume: Volume, *, exclude_vm: VM | None = None) -> QuerySet[VMDisk]:
    """The attachments of `volume` to VMs that exist (not deleted), but `exclude_vm`'s."""
    qs = VMDisk.objects.filter(volume=volume).exclude(vm__status=VMStatus.DELETED).select_related("vm")
    if exclude_vm is not None:
        qs = qs.exclude(vm=exclude_vm)
    return qs


def _names(attachments: QuerySet[VMDisk]) -> str:
    return ", ".join(sorted({a.vm.name for a in attachments}))


# --- helpers ------------------------------------------------------------------------------------

def _validate_label(label: object) -> str:
    text = str(label or "").strip()
    if not LABEL_RE.match(text):
        raise ValidationFailed("A disk's label is 1 to 63 letters, digits, dots, dashes or underscores, starting "
                               "with a letter or digit.", field="label")
    # Disks are found by id, target or label alike: a label must not look like either (trial #6).
    if text.isdigit() or TARGET_LIKE_RE.match(text):
        raise ValidationFailed(f"A disk's label cannot be a number or look like a disk target (vda, sdb, hdc): "
                               f"{text!r} would be mistaken for one.", field="label")
    return text


def _validate_bus(bus: object) -> str:
    text = str(bus or VMDisk.Bus.VIRTIO).strip().lower()
    if text not in BUSES:
        raise ValidationFailed(f"Bus must be one of: {', '.join(BUSES)} (virtio-blk or virtio-SCSI).", field="bus")
    return text


def _validate_flag(value: object, field: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", "", "none"):
        return False
    raise ValidationFailed(f"{field.capitalize()} must be true or false.", field=field)


def _validate_properties(properties: Mapping[str, object] | None, *, actor: Actor,
                         current: Mapping[str, object] | None = None) -> dict:
    if not properties:
        return dict(current or {})
    return validate_properties(device=DISK, properties=properties, actor=actor, current=current)


def _disk_ready_vm(*, actor: Actor, vm: VM | int, verb: str) -> VM:
    """Lock the VM and check that a disk may change now: a settled state, no disk or NIC change, snapshot
    or other job under way."""
    vm = _lock_visible(actor=actor, vm=vm)
    check_action(actor=actor, vm=vm, verb="disks")  # registered guards (vms.access: pools)
    if vm.status not in NIC_STATES:
        state = vm.get_status_display().lower()
        raise InvalidState(f"Cannot {verb} {vm.name}: it is {state}.", status=vm.status)
    busy = vm.disks.exclude(status=VMDisk.Status.ATTACHED).first()
    if busy is not None:
        raise InvalidState(f"Cannot {verb} {vm.name}: disk {busy.target} is still {busy.get_status_display().lower()}."
                           " Try again when it has finished.", status=vm.status)
    snapshot = _snapshot_busy(vm)
    if snapshot is not None:
        raise InvalidState(f"Cannot {verb} {vm.name}: {_busy_text(snapshot)}. Try again when it has finished.",
                           status=vm.status)
    job = _active_job(vm)
    if job is not None:
        raise InvalidState(f"Cannot {verb} {vm.name}: a {job.kind.split('.', 1)[-1].replace('.', ' ')} job is "
                           f"{job.get_status_display().lower()}. Try again when it has finished.", status=vm.status)
    return vm


def _refuse_with_snapshots(vm: VM, verb: str) -> None:
    """Disks are not added or removed while the VM has snapshots: an internal snapshot lives in each disk
    it covers, and reverting to it would rewrite a disk that now belongs elsewhere (or miss a new one)."""
    count = vm.snapshots.count()
    if count:
        raise Conflict(f"Cannot {verb} {vm.name}: it has {count} snapshot{'s' if count != 1 else ''}, which cover "
                       "its disks as they are. Delete its snapshots first.")


def _free_target(vm: VM, bus: str) -> str:
    """The first target of the bus no disk of the VM has (in any status: a target the guest may still
    hold is never reused)."""
    used = set(vm.disks.values_list("target", flat=True)) | {vm.cdrom_target or ""}
    prefix = _PREFIX[bus]
    for letter in _LETTERS[bus]:
        if prefix + letter not in used:
            return prefix + letter
    raise Conflict(f"{vm.name} has no free {bus} disk slot.")


def _disk_of(vm: VM, key: VMDisk | int | str) -> VMDisk:
    """One of the VM's disks, by attachment id, target (vdb, sda) or its volume's label."""
    qs = vm.disks.select_related("volume__pool__host")
    if isinstance(key, VMDisk):
        found = qs.filter(pk=key.pk).first()
    else:
        text = str(key).strip()
        found = qs.filter(pk=pk).first() if (pk := parse_id(text)) is not None else None
        found = found or qs.filter(target=text).first() or qs.filter(volume__label=text).first()
    if found is None:
        raise NotFound(f"{vm.name} has no disk {str(key)[:40]}.")
    return found


def _resolve_volume(*, actor: User, key: Volume | int | str) -> Volume:
    qs = data_volumes_visible(actor)
    if isinstance(key, Volume):
        found = qs.filter(pk=key.pk).first()
        text = key.label or str(key.pk)
    else:
        text = str(key).strip()
        found = qs.filter(pk=pk).first() if (pk := parse_id(text)) is not None else None
        if found is None:
            named = qs.filter(label=text)
            found = named.filter(owner=actor).first() or named.first()
    if found is None:
        raise NotFound(f"No data disk {text[:63]!r}.")
    return found


def _volume_reachable(volume: Volume, vm: VM) -> bool:
    """The VM's host sees the volume: its pool is on that host, or is a shared pool that host has too."""
    pool = volume.pool
    if pool.host_id == vm.host_id:
        return True
    return pool.shared and StoragePool.objects.filter(host_id=vm.host_id, name=pool.name, path=pool.path,
                                                      shared=True).exists()


def _pending_delete(volume: Volume) -> Job | None:
    return Job.objects.filter(kind=VOLUME_DELETE, target_type="volume", target_id=str(volume.pk),
                              status__in=JobStatus.ACTIVE).first()


def _share_check(volume: Volume, vm: VM, *, readonly: bool) -> None:
    """The sharing rules: a volume other VMs use may be attached again only if it is shareable, and then
    only read-only and only while nobody writes to it."""
    others = volume_users(volume, exclude_vm=vm)
    if not others.exists():
        return
    label = volume.label or volume.name
    if not volume.shareable:
        raise Conflict(f"Disk {label} is attached to {_names(others)}; it is not shareable, so it cannot be "
                       "attached to another VM.")
    if not readonly:
        raise Conflict(f"Disk {label} is attached to {_names(others)}: a shared disk is attached read-only only.")
    writers = others.filter(readonly=False)
    if writers.exists():
        raise Conflict(f"Disk {label} is attached read-write to {_names(writers)}: detach it there (or attach it "
                       "there read-only) before sharing it.")


# --- add ----------------------------------------------------------------------------------------

def vm_disk_add(*, actor: Actor, via: str, vm: VM | int, size_gib: object = None,
                volume: Volume | int | str | None = None, bus: str = VMDisk.Bus.VIRTIO, readonly: bool = False,
                shareable: bool = False, label: str = "", pool: str | None = None,
                properties: Mapping[str, object] | None = None) -> tuple[VMDisk, Job, str]:
    """Add a new blank data disk of `size_gib` (in storage domain `pool`, default the host's), or attach
    the existing data disk `volume` (by id or label); hot-plugged when the VM runs. Returns the
    attachment, the job and a message."""
    user = _check_actor(actor)
    bus = _validate_bus(bus)
    readonly = _validate_flag(readonly, "readonly")
    shareable = _validate_flag(shareable, "shareable")
    new = volume in (None, "")
    if new:
        if size_gib in (None, ""):
            raise ValidationFailed("Give the new disk's size, or choose an existing disk to attach.", field="size_gib")
        size = validate_size("disk_gib", size_gib)
        if readonly:
            raise ValidationFailed("A new disk is blank: attach it read-write (a read-only blank disk is of no use).",
                                   field="readonly")
        label = _validate_label(label) if str(label or "").strip() else ""
    elif size_gib not in (None, ""):
        raise ValidationFailed("An existing disk keeps its size: give either a size (a new disk) or a disk to "
                               "attach, not both.", field="size_gib")
    props = _validate_properties(properties, actor=user)
    with transaction.atomic():
        vm = _disk_ready_vm(actor=user, vm=vm, verb="add a disk to")
        _refuse_with_snapshots(vm, "add a disk to")
        count = vm.disks.exclude(target=SEED_TARGET).count()
        if count >= settings.DISKS_PER_VM:
            raise InvalidState(f"{vm.name} already has {count} disks (the most a VM may have is "
                               f"{settings.DISKS_PER_VM}).", status=vm.status)
        _check_boot_order(vm, props)
        running = vm.status in VMStatus.ACTIVE
        if running and not get_driver(vm.host.uri).capabilities().disk_hotplug:
            raise Conflict(f"The host of {vm.name} ({vm.host.name}) cannot add disks to a running VM; stop it "
                           "and add the disk again.")
        if new:
            owner, group = vm.owner, vm.group
            if not label:
                n = 1
                while Volume.objects.filter(owner=owner, label=f"{vm.name}-data{n}").exists():
                    n += 1
                label = f"{vm.name}-data{n}"[:63]
            storage = pool_for_host(vm.host, pool)
            quota_reserve(user=owner, group=group, vcpus=0, memory_mib=0, disk_gib=size, vms=0)  # the row lock
            if Volume.objects.filter(owner=owner, label=label).exists():
                raise ValidationFailed(f"{owner.get_username()} already has a disk labelled {label!r}.",
                                       field="label")
            vol = Volume.objects.create(
                pool=storage, name=f"{settings.DOMAIN_PREFIX}-data-{secrets.token_hex(6)}.qcow2", format="qcow2",
                capacity_gib=size, owner=owner, group=group, label=label, shareable=shareable)
        else:
            vol = _resolve_volume(actor=user, key=volume)  # type: ignore[arg-type]
            vol = Volume.objects.select_for_update().select_related("pool__host").get(pk=vol.pk)
            if shareable and not vol.shareable:
                raise ValidationFailed(f"Disk {vol.label} is not shareable.", field="shareable")
            if not vol.path:
                raise Conflict(f"Disk {vol.label} is still being created; try again when it is ready.")
            if _pending_delete(vol) is not None:
                raise Conflict(f"Disk {vol.label} is being deleted.")
            if vm.disks.filter(volume=vol).exists():
                raise Conflict(f"Disk {vol.label} is attached to {vm.name} already.")
            if not _volume_reachable(vol, vm):
                raise Conflict(f"Disk {vol.label} is in storage domain {vol.pool.name} of host {vol.pool.host.name}, "
                               f"which {vm.name}'s host ({vm.host.name}) does not see.")
            _share_check(vol, vm, readonly=readonly)
        target = _free_target(vm, bus)
        disk = VMDisk.objects.create(vm=vm, volume=vol, target=target, bus=bus, readonly=readonly, properties=props,
                                     status=VMDisk.Status.ATTACHING)
        job = job_create(kind=DISK_ADD, actor=user, via=via, target=vm,
                         params={"disk_id": disk.pk, "volume_id": vol.pk, "created": new, "target": target,
                                 "label": vol.label})
        live = " (hot-plug)" if running else ""
        what = f"a new {vol.capacity_gib} GiB disk {vol.label}" if new else f"disk {vol.label}"
        mode = " read-only" if readonly else ""
        audit(actor=user, via=via, action=DISK_ADD, target=vm, job=job, outcome=AuditEvent.Outcome.REQUESTED,
              message=f"Add {what} to {vm.name} as {target} ({bus}{mode}){live}",
              data={"label": vol.label, "target": target, "bus": bus, "readonly": readonly, "new": new,
                    "size_gib": vol.capacity_gib, "shareable": vol.shareable, "properties": props})
        disks_publish(vm)
    return disk, job, f"Adding disk {vol.label} to {vm.name} as {target}."


# --- remove -------------------------------------------------------------------------------------

def vm_disk_remove(*, actor: Actor, via: str, vm: VM | int, disk: VMDisk | int | str,
                   delete_volume: bool = False) -> tuple[VMDisk, Job, str]:
    """Detach a data disk (by attachment id, target or label; hot-unplugged when running); with
    `delete_volume` also delete it (refused while other VMs use it). The boot disk cannot be removed."""
    user = _check_actor(actor)
    delete_volume = _validate_flag(delete_volume, "delete_volume")
    with transaction.atomic():
        vm = _disk_ready_vm(actor=user, vm=vm, verb="remove a disk from")
        _refuse_with_snapshots(vm, "remove a disk from")
        found = _disk_of(vm, disk)
        if not is_data_disk(found):
            what = "its cloud-init seed" if found.target == SEED_TARGET else "its boot disk"
            raise Conflict(f"Disk {found.target} is {what}: it goes with {vm.name} and cannot be detached.")
        if vm.status in VMStatus.ACTIVE and not get_driver(vm.host.uri).capabilities().disk_hotplug:
            raise Conflict(f"The host of {vm.name} ({vm.host.name}) cannot remove disks from a running VM; stop it "
                           "and remove the disk again.")
        vol = found.volume
        if delete_volume:
            _check_may_delete(user, vol)
            others = volume_users(vol, exclude_vm=vm)
            if others.exists():
                raise Conflict(f"Disk {vol.label} is attached to {_names(others)} too: it cannot be deleted. Detach "
                               "it only.")
        job = job_create(kind=DISK_REMOVE, actor=user, via=via, target=vm,
                         params={"disk_id": found.pk, "target": found.target, "label": vol.label,
                                 "volume_id": vol.pk, "delete_volume": delete_volume})
        VMDisk.objects.filter(pk=found.pk).update(status=VMDisk.Status.DETACHING)
        found.status = VMDisk.Status.DETACHING
        then = " and delete it" if delete_volume else ""
        audit(actor=user, via=via, action=DISK_REMOVE, target=vm, job=job, outcome=AuditEvent.Outcome.REQUESTED,
              message=f"Detach disk {vol.label} ({found.target}) from {vm.name}{then}",
              data={"label": vol.label, "target": found.target, "delete_volume": delete_volume})
        disks_publish(vm)
    return found, job, f"Removing disk {vol.label} from {vm.name}."


def _check_may_delete(user: User, volume: Volume) -> None:
    if user.is_staff or volume.owner_id == user.pk:
        return
    if volume.group_id and user.groups.filter(pk=volume.group_id).exists():
        return
    raise PermissionDenied(f"Only the owner of disk {volume.label} or an administrator may delete it.")


# --- grow ---------------------------------------------------------------------------------------

def vm_disk_grow(*, actor: Actor, via: str, vm: VM | int, disk: VMDisk | int | str,
                 size_gib: object) -> tuple[VMDisk, Job | None, str]:
    """Grow any writable disk of the VM (live when running); charged to the disk quota."""
    user = _check_actor(actor)
    with transaction.atomic():
        locked = _lock_visible(actor=user, vm=vm)
        check_action(actor=user, vm=locked, verb="disks")  # registered guards (vms.access: pools)
        found = _disk_of(locked, disk)
        if found.readonly:
            raise ValidationFailed(f"Disk {found.target} of {locked.name} is read-only: it cannot grow.", field="disk")
        if not is_data_disk(found):
            root = vm_root_disk(locked)
            if root is None or root.pk != found.pk:
                raise Conflict(f"Disk {found.target} of {locked.name} is not one the portal manages; only the boot "
                               "disk and data disks grow.")
            result = vm_grow_disk(actor=user, via=via, vm=locked, disk_gib=size_gib)
            return found, result.job, result.message
        vol = found.volume
        new_size = validate_size("disk_gib", size_gib)
        if new_size == vol.capacity_gib:
            return found, None, f"Disk {vol.label} is already {new_size} GiB."
        if new_size < vol.capacity_gib:
            raise ValidationFailed(f"A disk can only grow: {vol.label} is {vol.capacity_gib} GiB, so give more than "
                                   "that.", field="size_gib")
        _refuse_while_busy(locked, f"grow disk {vol.label} of")
        if found.status != VMDisk.Status.ATTACHED:
            raise InvalidState(f"Disk {vol.label} is {found.get_status_display().lower()}.", status=locked.status)
        if not get_driver(locked.host.uri).capabilities().live_disk_resize:
            raise Conflict(f"The host of {locked.name} ({locked.host.name}) cannot grow disks.")
        old = vol.capacity_gib
        quota_reserve(user=vol.owner, group=vol.group, vcpus=0, memory_mib=0, disk_gib=new_size - old, vms=0)
        Volume.objects.filter(pk=vol.pk).update(capacity_gib=new_size)  # charged now; the job's failure gives it back
        vol.capacity_gib = new_size
        job = job_create(kind=DISK_GROW, actor=user, via=via, target=locked,
                         params={"disk_id": found.pk, "target": found.target, "label": vol.label,
                                 "previous_gib": old, "disk_gib": new_size})
        audit(actor=user, via=via, action=DISK_GROW, target=locked, job=job, outcome=AuditEvent.Outcome.REQUESTED,
              message=f"Grow disk {vol.label} ({found.target}) of {locked.name} from {old} to {new_size} GiB",
              data={"label": vol.label, "target": found.target, "previous_gib": old, "disk_gib": new_size})
        disks_publish(locked)
    return found, job, f"Growing disk {vol.label} of {locked.name} to {new_size} GiB."


# --- properties ---------------------------------------------------------------------------------

def vm_disk_update(*, actor: Actor, via: str, vm: VM | int, disk: VMDisk | int | str,
                   properties: Mapping[str, object]) -> tuple[VMDisk, Job | None, str]:
    """Change a disk's device properties (validated by vms.properties); applied live where libvirt can
    (I/O limits), else at the VM's next start (the message says which). Refused on adopted VMs: their
    definition is their own."""
    user = _check_actor(actor)
    with transaction.atomic():
        _precheck_properties(user, vm, disk, properties)
        locked = _disk_ready_vm(actor=user, vm=vm, verb="change a disk of")
        found = _disk_of(locked, disk)
        previous = dict(found.properties or {})
        changed = _store_properties(user, locked, found, properties)
        if changed is None:
            return found, None, f"Disk {found.target} of {locked.name} has these properties already."
        props, old_props = changed
        job = job_create(kind=DISK_UPDATE, actor=user, via=via, target=locked,
                         params={"disk_id": found.pk, "target": found.target, PREVIOUS_PROPERTIES: previous})
        _audit_properties(user, via, locked, found, job)
        disks_publish(locked)
    return found, job, f"Saved the properties of disk {found.target} of {locked.name}{_when(locked, props, old_props)}."


def _store_properties(user: User, vm: VM, disk: VMDisk, properties: Mapping[str, object]
                      ) -> tuple[dict, dict] | None:
    """Validate and write a disk's new properties (the VM locked and ready); (new, old), or None when
    nothing changes."""
    if vm.adopted_at is not None:
        raise Conflict(f"{vm.name} was adopted: its definition is its own, so the portal does not change its "
                       "disks' properties.")
    props = _validate_properties(properties, actor=user, current=disk.properties)
    if props == (disk.properties or {}):
        return None
    _check_boot_order(vm, props, disk_id=disk.pk)
    old_props = dict(disk.properties or {})
    VMDisk.objects.filter(pk=disk.pk).update(properties=props)
    VM.objects.filter(pk=vm.pk).update(updated_at=timezone.now())
    disk.properties = props
    return props, old_props


def _audit_properties(user: User, via: str, vm: VM, disk: VMDisk, job: Job) -> None:
    props = disk.properties or {}
    audit(actor=user, via=via, action=DISK_UPDATE, target=vm, job=job, outcome=AuditEvent.Outcome.REQUESTED,
          message=f"Set the properties of disk {disk.target} of {vm.name}: "
                  + (", ".join(f"{k}={v}" for k, v in sorted(props.items())) or "none"),
          data={"target": disk.target, "properties": props})


def _when(vm: VM, props: Mapping[str, object], old_props: Mapping[str, object]) -> str:
    """When changed properties take effect, for the message."""
    when = ""
    if vm.status in VMStatus.ACTIVE:
        changed = {k for k in set(props) | set(old_props) if props.get(k) != old_props.get(k)}
        live = changed & set(IOTUNE_KEYS)
        later = changed - live
        if live and not later:
            when = " (I/O limits apply at once)"
        elif live:
            when = " (I/O limits apply at once; the others at its next start)"
        else:
            when = " (they take effect at its next start)"
    return when


def vm_disk_change(*, actor: Actor, via: str, vm: VM | int, disk: VMDisk | int | str, size_gib: object = None,
                   properties: Mapping[str, object] | None = None) -> tuple[VMDisk, Job | None, str]:
    """Grow a disk and/or change its properties in one request (the API's PATCH). Both together: the
    properties are saved first and the grow job applies them to the definition after growing (one job:
    a second would be refused while the first is queued)."""
    if properties is None:
        return vm_disk_grow(actor=actor, via=via, vm=vm, disk=disk, size_gib=size_gib)
    if size_gib is None:
        return vm_disk_update(actor=actor, via=via, vm=vm, disk=disk, properties=properties)
    user = _check_actor(actor)
    with transaction.atomic():
        _precheck_properties(user, vm, disk, properties)
        locked = _disk_ready_vm(actor=user, vm=vm, verb="change a disk of")
        found = _disk_of(locked, disk)
        changed = _store_properties(user, locked, found, properties)
        found, job, message = vm_disk_grow(actor=user, via=via, vm=locked, disk=found, size_gib=size_gib)
        if changed is None:
            return found, job, message
        props, old_props = changed
        if job is None:  # the size was right already: the properties' own job
            job = job_create(kind=DISK_UPDATE, actor=user, via=via, target=locked,
                             params={"disk_id": found.pk, "target": found.target})
        else:
            Job.objects.filter(pk=job.pk).update(params={**job.params, APPLY_PROPERTIES: True})
            job.params = {**job.params, APPLY_PROPERTIES: True}
        _audit_properties(user, via, locked, found, job)
        disks_publish(locked)
    return found, job, (f"{message} Saved the properties of disk {found.target} of {locked.name}"
                        f"{_when(locked, props, old_props)}.")


def _precheck_properties(user: User, vm: VM | int, disk: VMDisk | int | str, properties: Mapping[str, object]
                         ) -> None:
    """Bad properties are a 400 even while another disk job is pending (trial #13): validated once before
    the busy checks (and again, locked, when stored)."""
    found_vm = _lock_visible(actor=user, vm=vm)
    found = _disk_of(found_vm, disk)
    props = _validate_properties(properties, actor=user, current=found.properties)
    _check_boot_order(found_vm, props, disk_id=found.pk)


def _check_boot_order(vm: VM, properties: Mapping[str, object], *, disk_id: int | None = None) -> None:
    """A disk's boot order must be unique among the VM's disks and NICs (vms.properties.check_boot_order)."""
    if properties.get("boot_order") is None:
        return
    check_boot_order(vm=vm, properties=properties, disk_id=disk_id)


# --- data disks without a VM --------------------------------------------------------------------

def data_volume_delete(*, actor: Actor, via: str, volume: Volume | int | str) -> tuple[Volume, Job, str]:
    """Delete a detached data disk the actor owns (or any, for administrators)."""
    user = _check_actor(actor)
    with transaction.atomic():
        found = _resolve_volume(actor=user, key=volume)
        found = Volume.objects.select_for_update().select_related("pool__host").get(pk=found.pk)
        _check_may_delete(user, found)
        users = volume_users(found)
        if users.exists():
            raise Conflict(f"Disk {found.label} is attached to {_names(users)}: detach it first.")
        if _pending_delete(found) is not None:
            raise Conflict(f"Disk {found.label} is being deleted already.")
        job = job_create(kind=VOLUME_DELETE, actor=user, via=via, target=found,
                         params={"volume_id": found.pk, "label": found.label})
        audit(actor=user, via=via, action=VOLUME_DELETE, target_type="volume", target_id=str(found.pk),
              target_name=found.label, job=job, outcome=AuditEvent.Outcome.REQUESTED,
              message=f"Delete disk {found.label} ({found.capacity_gib} GiB)",
              data={"label": found.label, "size_gib": found.capacity_gib})
    return found, job, f"Deleting disk {found.label}."
