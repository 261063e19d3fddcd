"""Every rule about backups: start one (full or incremental, push or pull), delete, restore to a new VM
or in place, schedules and retention. Doors (web, API, CLI, admin, Slack) call these.

Record phase here (one transaction, under the VM's row lock): check, reserve backup space, write the
row and the job; act phase in backups.jobs. Rules (docs/backups.md):
- A running VM is backed up through libvirt's backup API with a new checkpoint; a stopped one (libvirt
  needs a running domain) by a full copy of its disks, with no checkpoint: the next backup is full.
- An incremental starts at the checkpoint of the VM's newest ready push backup, if libvirt still has it
  and the VM's disks are the same ones (a disk added or removed: the next backup is full).
- Backup space is reserved when a backup is asked for: the disks' allocated size for a full one,
  BACKUP_INCREMENTAL_ESTIMATE_PERCENT of it for an incremental one (at least 1 GiB); once made, the
  backup counts by the real size of its files.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from portal.actors import Actor, require_user
from portal.audit import audit
from portal.choices import JobStatus
from portal.exceptions import Conflict, InvalidState, NotFound, PermissionDenied, ValidationFailed
from portal.hypervisor import get_driver
from portal.jobs import job_create
from portal.models import AuditEvent, Job
from quotas.services import quota_reserve
from storage.models import Image, Volume
from vms.choices import VMStatus
from vms.models import VM, VMDisk
from vms.services import vm_create, vm_lock_for_action, vm_refuse_while_busy

from .models import Backup, BackupSchedule
from .selectors import backup_chain, backup_get

GIB = 1024**3
KINDS = ("auto", "full", "incremental")
MODES = (Backup.Mode.PUSH, Backup.Mode.PULL)
ACTIVE = (Backup.Status.QUEUED, Backup.Status.RUNNING)


def _user(actor: Actor) -> User:
    return require_user(actor, "Sign in to manage backups.")


def _may_manage(user: User, backup: Backup) -> None:
    if user.is_staff or backup.owner_id == user.pk:
        return
    if backup.group_id and user.groups.filter(pk=backup.group_id).exists():
        return
    if backup.vm_id and backup.vm is not None and backup.vm.owner_id == user.pk:
        return
    raise PermissionDenied("Only the backup's owner, their team or an administrator may do that.")


def _writable_disks(vm: VM) -> list[VMDisk]:
    return list(vm.disks.select_related("volume__pool").filter(readonly=False).order_by("pk"))


def volume_name(backup: Backup, target: str) -> str:
    return f"{settings.DOMAIN_PREFIX}-backup-{backup.uuid.hex[:12]}-{target}.qcow2"


def same_disks(recorded: list[dict[str, Any]], disks: list[VMDisk]) -> bool:
    """Whether `disks` are the very volumes a backup recorded, at the same targets (a disk removed and
    another attached at its target is not the same: its checkpoint bitmaps are not there)."""
    now = {d.target: d for d in disks}
    if sorted(now) != sorted(r["target"] for r in recorded):
        return False
    for r in recorded:
        disk = now[r["target"]]
        if "volume_id" in r:
            if r["volume_id"] != disk.volume_id:
                return False
        elif (r.get("source_pool"), r.get("source_volume")) != (disk.volume.pool.name, disk.volume.name):
            return False
    return True


def incremental_parent(vm: VM, disks: list[VMDisk], *, mode: str = Backup.Mode.PUSH) -> tuple[Backup | None, str]:
    """The backup an incremental of `vm` would start from, or None and why there is none."""
    ready = Backup.objects.filter(vm=vm, status=Backup.Status.READY)
    if mode == Backup.Mode.PUSH:
        ready = ready.filter(mode=Backup.Mode.PUSH)
    last = ready.order_by("-created_at", "-id").first()
    if last is None:
        return None, f"{vm.name} has no ready backup to start an incremental one from."
    if not last.checkpoint:
        return None, (f"The last backup of {vm.name} was a copy of the stopped VM (no checkpoint): "
                      "the next one is a full backup.")
    if not same_disks(last.disks, disks):
        return None, f"The disks of {vm.name} changed since its last backup: the next one is a full backup."
    if last.checkpoint not in get_driver(vm.host.uri).list_checkpoints(str(vm.uuid)):
        return None, (f"libvirt no longer has the checkpoint of {vm.name}'s last backup (a snapshot was "
                      "reverted, or the VM was restored): the next one is a full backup.")
    return last, ""


def _estimate_bytes(vm: VM, disks: list[VMDisk], *, incremental: bool) -> int:
    driver = get_driver(vm.host.uri)
    allocated = 0
    for disk in disks:
        try:
            allocated += driver.volume_info(pool=disk.volume.pool.name, name=disk.volume.name).allocation_bytes
        except NotFound:
            allocated += disk.volume.capacity_gib * GIB
    gib = max(1, math.ceil(allocated / GIB))
    if incremental:
        gib = max(1, math.ceil(gib * settings.BACKUP_INCREMENTAL_ESTIMATE_PERCENT / 100))
    return gib * GIB


def _vm_config(vm: VM) -> dict[str, Any]:
    return {"vcpus": vm.vcpus, "memory_mib": vm.memory_mib, "disk_gib": vm.disk_gib, "image_id": vm.image_id,
            "image": vm.image.name if vm.image is not None else "", "description": vm.description,
            "user_data": vm.user_data, "group_id": vm.group_id}


def backup_create(*, actor: Actor, via: str, vm: VM | int, kind: str = "auto", mode: str = "push",
                  note: str = "", schedule: BackupSchedule | None = None) -> tuple[Backup, Job, str]:
    """Back a VM up (a job). kind: "full", "incremental" (since the VM's newest ready backup whose
    checkpoint libvirt still has) or "auto" (incremental when possible, else full). mode "pull": the
    disks are exported over NBD (Backup.nbd_uri) until backup_finish is called."""
    user = _user(actor)
    kind = (kind or "auto").strip().lower()
    if kind not in KINDS:
        raise ValidationFailed(f"Kind must be {', '.join(KINDS)}.", field="kind")
    mode = (mode or Backup.Mode.PUSH).strip().lower()
    if mode not in MODES:
        raise ValidationFailed("Mode must be push (the portal keeps the files) or pull (an external tool reads "
                               "the disks over NBD).", field="mode")
    note = (note or "").strip()
    if len(note) > 200:
        raise ValidationFailed("The note is longer than 200 characters.", field="note")
    with transaction.atomic():
        vm = vm_lock_for_action(actor=user, vm=vm)
        vm_refuse_while_busy(vm, "back up")
        other = Backup.objects.filter(vm=vm, status__in=ACTIVE).first()
        if other is not None:
            hint = " (a pull backup: finish it first)" if other.mode == Backup.Mode.PULL else ""
            raise InvalidState(f"Cannot back up {vm.name}: backup {other.pk} of it is under way{hint}.",
                               status=vm.status)
        running = vm.status in VMStatus.ACTIVE
        if mode == Backup.Mode.PULL and not running:
            raise InvalidState(f"{vm.name} is {vm.get_status_display().lower()}: a pull backup exports the disks "
                               "of a running VM. Start it, or make a push backup.", status=vm.status)
        disks = _writable_disks(vm)
        if not disks:
            raise Conflict(f"{vm.name} has no disk to back up.")
        parent = None
        if kind != "full":
            if not running:
                reason = (f"{vm.name} is stopped: libvirt backs up running VMs only, so a stopped VM is copied "
                          "in full (and the next backup is full too).")
            else:
                parent, reason = incremental_parent(vm, disks, mode=mode)
            if kind == "incremental" and parent is None:
                raise Conflict(reason)
        chosen = Backup.Kind.INCREMENTAL if parent is not None else Backup.Kind.FULL
        # A pull backup keeps no files here, but its scratch files (the guest's writes during the export)
        # grow on the host until it is finished: charged like an incremental's estimate meanwhile.
        estimate = _estimate_bytes(vm, disks, incremental=parent is not None or mode == Backup.Mode.PULL)
        if estimate:
            quota_reserve(user=vm.owner, group=vm.group, vcpus=0, memory_mib=0, disk_gib=0, vms=0,
                          backup_gib=estimate // GIB)
        backup = Backup(vm=vm, vm_name=vm.name, owner=vm.owner, group=vm.group, kind=chosen, mode=mode,
                        parent=parent, status=Backup.Status.QUEUED, size_bytes=estimate, vm_config=_vm_config(vm),
                        note=note, created_by=user, created_via=via, schedule=schedule)
        if running:
            backup.checkpoint = f"{settings.DOMAIN_PREFIX}-cp-{backup.uuid.hex[:12]}"
        backup.disks = [{"target": d.target, "bus": d.bus, "boot": i == 0, "volume_id": d.volume_id,
                         "source_pool": d.volume.pool.name,
                         "source_volume": d.volume.name, "capacity_bytes": d.volume.capacity_gib * GIB,
                         "volume": volume_name(backup, d.target), "format": "qcow2"}
                        for i, d in enumerate(disks)]
        backup.save()
        job = job_create(kind="backup.create", actor=user, via=via, target=vm,
                         params={"backup_id": backup.pk, "live": running}, max_attempts=1)
        how = f"{chosen} {mode} backup" + (f" since backup {parent.pk}" if parent else "")
        audit(actor=user, via=via, action="backup.create", target=vm, job=job, outcome=AuditEvent.Outcome.REQUESTED,
              message=f"Back up {vm.name} ({how})" + ("" if running else "; stopped: a full copy of its disks"),
              data={"backup": backup.pk, "kind": chosen, "mode": mode, "parent": parent.pk if parent else None,
                    "estimate_gib": estimate // GIB})
    return backup, job, f"Backing up {vm.name} ({how})."


def _lock_backup(user: User, backup: Backup | int | str) -> Backup:
    found = backup_get(actor=user, key=backup)
    locked = Backup.objects.select_for_update(of=("self",)).select_related("vm__host", "pool__host").get(pk=found.pk)
    _may_manage(user, locked)
    return locked


def backup_finish(*, actor: Actor, via: str, backup: Backup | int | str) -> tuple[Backup, Job | None, str]:
    """Pull mode: the external tool has read what it needs; end the export (the checkpoint stays)."""
    user = _user(actor)
    with transaction.atomic():
        found = _lock_backup(user, backup)
        if found.mode != Backup.Mode.PULL or found.status != Backup.Status.RUNNING or not found.nbd_uri:
            raise InvalidState(f"Backup {found.pk} is not a pull backup being read (it is "
                               f"{found.get_status_display().lower()}).", status=found.status)
        job = job_create(kind="backup.finish", actor=user, via=via, target=found, params={"backup_id": found.pk})
        audit(actor=user, via=via, action="backup.finish", target=found, job=job,
              outcome=AuditEvent.Outcome.REQUESTED, message=f"End the NBD export of backup {found.pk} of {found.vm_name}")
    return found, job, f"Ending the export of backup {found.pk}."


def backup_delete(*, actor: Actor, via: str, backup: Backup | int | str) -> tuple[Backup, Job | None, str]:
    """Delete a backup and its files (refused while an incremental depends on it, unless it is deleted too)."""
    user = _user(actor)
    with transaction.atomic():
        found = _lock_backup(user, backup)
        if found.status in ACTIVE:
            what = "being read over NBD: finish it first" if found.nbd_uri else "being made"
            raise InvalidState(f"Backup {found.pk} of {found.vm_name} is {what}.", status=found.status)
        if found.status == Backup.Status.DELETING:
            return found, None, f"Backup {found.pk} is being deleted already."
        # Failed children and pull ones (no files here, never restored) do not depend on it: the delete
        # job unlinks them.
        children = list(Backup.objects.filter(parent=found).exclude(status=Backup.Status.FAILED)
                        .exclude(mode=Backup.Mode.PULL, status=Backup.Status.READY)
                        .values_list("pk", flat=True))
        if children:
            raise Conflict(f"Backup {found.pk} of {found.vm_name} is the base of incremental backup(s) "
                           f"{', '.join(map(str, children))}: delete those first (newest first).")
        restoring = [p for p in Job.objects.filter(kind="backup.restore", status__in=JobStatus.ACTIVE)
                     .values_list("params", flat=True) if found.pk in (p or {}).get("chain", [])]
        if restoring:
            raise InvalidState(f"Backup {found.pk} is being restored from.", status=found.status)
        previous = found.status  # a failed delete puts it back (a failed backup stays failed)
        Backup.objects.filter(pk=found.pk).update(status=Backup.Status.DELETING)
        found.status = Backup.Status.DELETING
        job = job_create(kind="backup.delete", actor=user, via=via, target=found,
                         params={"backup_id": found.pk, "previous": previous})
        audit(actor=user, via=via, action="backup.delete", target=found, job=job,
              outcome=AuditEvent.Outcome.REQUESTED, message=f"Delete backup {found.pk} of {found.vm_name}")
    return found, job, f"Deleting backup {found.pk} of {found.vm_name}."


def restore_chain_check(backup: Backup) -> list[Backup]:
    """The chain of `backup`, every member ready with its files in place; Conflict (nothing made) if not."""
    if backup.mode == Backup.Mode.PULL:
        raise Conflict(f"Backup {backup.pk} is a pull backup: it has no files here to restore (an external tool "
                       "read its disks over NBD and keeps what it read).")
    chain = backup_chain(backup)
    if chain[0].kind != Backup.Kind.FULL:
        raise Conflict(f"The chain of backup {backup.pk} is broken: its full backup is gone.")
    for member in chain:
        if member.status != Backup.Status.READY:
            raise Conflict(f"The chain of backup {backup.pk} is broken: backup {member.pk} is "
                           f"{member.get_status_display().lower()}.")
        pool = member.pool
        if member.mode != Backup.Mode.PUSH or pool is None or not member.disks:
            raise Conflict(f"Backup {member.pk} has no files here (a pull backup is kept by the tool that read it).")
        present = {v.name for v in get_driver(pool.host.uri).list_volumes(pool=pool.name)}
        missing = [d["volume"] for d in member.disks if d["volume"] not in present]
        if missing:
            raise Conflict(f"The chain of backup {backup.pk} is broken: the files of backup {member.pk} "
                           f"({', '.join(d['target'] for d in member.disks if d['volume'] in missing)}) are missing.")
    targets = [d["target"] for d in chain[-1].disks]
    for member in chain:
        if sorted(d["target"] for d in member.disks) != sorted(targets):
            raise Conflict(f"The chain of backup {backup.pk} is broken: backup {member.pk} holds other disks.")
    return chain


def backup_restore(*, actor: Actor, via: str, backup: Backup | int | str, name: str | None = None,
                   in_place: bool = False) -> tuple[VM, Job, str]:
    """Restore the chain ending at `backup`: to a new VM called `name` (quota checked), or in place onto
    its stopped VM's disks. Refused when the chain is broken (a backup missing or failed)."""
    user = _user(actor)
    if in_place and name:
        raise ValidationFailed("Give either a new VM name or in place, not both.", field="name")
    found = backup_get(actor=user, key=backup)
    _may_manage(user, found)
    chain = restore_chain_check(found)
    params = {"backup_id": found.pk, "chain": [b.pk for b in chain], "in_place": in_place}
    if in_place:
        if found.vm_id is None:
            raise Conflict(f"The VM of backup {found.pk} ({found.vm_name}) is gone: restore it to a new VM.")
        with transaction.atomic():
            vm = vm_lock_for_action(actor=user, vm=found.vm_id)
            if vm.status != VMStatus.STOPPED:
                raise InvalidState(f"Stop {vm.name} first: a restore in place replaces its disks.", status=vm.status)
            vm_refuse_while_busy(vm, "restore")
            if Backup.objects.filter(vm=vm, status__in=ACTIVE).exists():
                raise InvalidState(f"A backup of {vm.name} is under way.", status=vm.status)
            if vm.snapshots.exists():
                raise Conflict(f"{vm.name} has snapshots, which live inside the disks a restore replaces: "
                               "delete them first.")
            have = {d.target: d for d in _writable_disks(vm)}
            lacking = [d["target"] for d in found.disks if d["target"] not in have]
            if lacking:
                raise Conflict(f"{vm.name} no longer has disk(s) {', '.join(lacking)} of the backup: restore it "
                               "to a new VM.")
            # Only the very disks backed up are written (not another disk attached at the same target since),
            # and none that another VM has attached too.
            other = [d["target"] for d in found.disks if not same_disks([d], [have[d["target"]]])]
            if other:
                raise Conflict(f"Disk(s) {', '.join(other)} of {vm.name} are not the ones backed up (a disk was "
                               "replaced since): restore the backup to a new VM.")
            shared = [d["target"] for d in found.disks
                      if VMDisk.objects.filter(volume_id=have[d["target"]].volume_id).exclude(vm=vm)
                      .exclude(vm__status=VMStatus.DELETED).exists()]
            if shared:
                raise Conflict(f"Disk(s) {', '.join(shared)} of {vm.name} are attached to another VM too: detach "
                               "them there first, or restore the backup to a new VM.")
            grow = sum(max(0, math.ceil(d["capacity_bytes"] / GIB) - have[d["target"]].volume.capacity_gib)
                       for d in found.disks)
            if grow:  # a restored disk larger than the one it replaces: charged like any disk growth
                quota_reserve(user=vm.owner, group=vm.group, vcpus=0, memory_mib=0, disk_gib=grow, vms=0)
            job = job_create(kind="backup.restore", actor=user, via=via, target=vm, params=params, max_attempts=1)
            audit(actor=user, via=via, action="backup.restore", target=vm, job=job,
                  outcome=AuditEvent.Outcome.REQUESTED,
                  message=f"Restore {vm.name} in place from backup {found.pk} (chain {params['chain']})")
        return vm, job, f"Restoring {vm.name} from backup {found.pk}."
    if not name:
        raise ValidationFailed("Give the new VM a name.", field="name")
    cfg = found.vm_config
    image = Image.objects.filter(pk=cfg.get("image_id")).first() if cfg.get("image_id") else None
    if image is None:
        raise Conflict(f"The image {cfg.get('image') or '?'} that {found.vm_name} booted with is gone: the restored "
                       "VM could not boot the same way.")
    owner = found.owner if (user.is_staff and found.owner_id != user.pk) else None
    with transaction.atomic():
        result = vm_create(actor=user, via=via, name=name, image=image, vcpus=cfg.get("vcpus"),
                           memory_mib=cfg.get("memory_mib"), disk_gib=cfg.get("disk_gib"),
                           description=cfg.get("description", ""), group=found.group, start=False,
                           owner=owner, user_data=cfg.get("user_data", "") if image.cloud_init else "")
        vm = result.vm
        root = vm.disks.select_related("volume__pool").get(target="vda")
        # The backup's other disks come back as the new VM's data disks: its owner's (or team's), counted
        # on their disk quota like any data disk (checked here, under the quota row lock vm_create took).
        extra = [d for d in found.disks if d["target"] != "vda"]
        sizes = {d["target"]: max(1, math.ceil(d["capacity_bytes"] / GIB)) for d in extra}
        if extra:
            quota_reserve(user=vm.owner, group=vm.group, vcpus=0, memory_mib=0, disk_gib=sum(sizes.values()), vms=0)
        taken = set(Volume.objects.filter(owner=vm.owner).values_list("label", flat=True))
        for disk in extra:
            label = base = f"{vm.name}-{disk['target']}"[:63]
            n = 1
            while label in taken:
                n += 1
                label = f"{base[:58]}-{n}"
            taken.add(label)
            volume = Volume.objects.create(pool=root.volume.pool, name=f"{vm.domain_name}-{disk['target']}.qcow2",
                                           capacity_gib=sizes[disk["target"]], owner=vm.owner, group=vm.group,
                                           label=label)
            VMDisk.objects.create(vm=vm, volume=volume, target=disk["target"], bus=disk.get("bus", "virtio"))
        job = job_create(kind="backup.restore", actor=user, via=via, target=vm,
                         params={**params, "create_job": str(result.job.pk) if result.job else ""}, max_attempts=1)
        audit(actor=user, via=via, action="backup.restore", target=vm, job=job, outcome=AuditEvent.Outcome.REQUESTED,
              message=f"Restore backup {found.pk} of {found.vm_name} as a new VM {name} (chain {params['chain']})")
    return vm, job, f"Restoring backup {found.pk} of {found.vm_name} as {name}."


# --- schedules and retention -------------------------------------------------------------------

def _positive(field: str, value: object, *, low: int, high: int) -> int:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise ValidationFailed(f"Must be a whole number from {low} to {high}.", field=field) from None
    if not low <= number <= high:
        raise ValidationFailed(f"Must be a whole number from {low} to {high}.", field=field)
    return number


def backup_schedule_set(*, actor: Actor, via: str, vm: VM | int, enabled: bool | None = None,
                        interval_hours: object = None, incrementals: object = None,
                        keep_chains: object = None) -> BackupSchedule:
    """Create or change a VM's backup schedule. A value left out (None) keeps the schedule's current one
    (a new schedule: enabled, every 24 h, 6 incrementals, 2 chains). A changed interval moves the next run
    to the last run plus the new interval (now, if that is past or there was no run yet)."""
    user = _user(actor)
    with transaction.atomic():
        vm = vm_lock_for_action(actor=user, vm=vm)
        current = BackupSchedule.objects.select_for_update().filter(vm=vm).first()
        base = current or BackupSchedule(vm=vm)
        interval = _positive("interval_hours", base.interval_hours if interval_hours is None else interval_hours,
                             low=1, high=24 * 365)
        incs = _positive("incrementals", base.incrementals if incrementals is None else incrementals,
                         low=0, high=1000)
        keep = _positive("keep_chains", base.keep_chains if keep_chains is None else keep_chains, low=1, high=1000)
        enabled = base.enabled if enabled is None else bool(enabled)
        now = timezone.now()
        next_run = base.next_run_at
        if current is None or next_run is None:
            next_run = now
        elif interval != current.interval_hours:
            next_run = max(now, current.last_run_at + timedelta(hours=interval)) if current.last_run_at else now
        schedule, _made = BackupSchedule.objects.update_or_create(
            vm=vm, defaults={"enabled": enabled, "interval_hours": interval, "incrementals": incs,
                             "keep_chains": keep, "created_by": user, "next_run_at": next_run})
        audit(actor=user, via=via, action="backup.schedule.set", target=vm,
              message=f"Back {vm.name} up every {interval} h ({incs} incrementals per full, keep {keep} chains)"
                      + ("" if enabled else ", paused"),
              data={"enabled": enabled, "interval_hours": interval, "incrementals": incs, "keep_chains": keep})
    return schedule


def backup_schedule_remove(*, actor: Actor, via: str, vm: VM | int) -> None:
    """Stop backing a VM up on a schedule (its backups stay)."""
    user = _user(actor)
    with transaction.atomic():
        vm = vm_lock_for_action(actor=user, vm=vm)
        deleted, _ = BackupSchedule.objects.filter(vm=vm).delete()
        if not deleted:
            raise NotFound(f"{vm.name} has no backup schedule.")
        audit(actor=user, via=via, action="backup.schedule.remove", target=vm, message=f"No more scheduled backups of {vm.name}")
