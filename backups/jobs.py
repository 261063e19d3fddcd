"""Act phases of the backup jobs (backup.create, backup.finish, backup.restore, backup.delete), and the
housekeeping pass that runs schedules and retention."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import subprocess
import tempfile
import time
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.utils import timezone

from portal.audit import audit
from portal.choices import JobStatus
from portal.exceptions import Conflict, NotFound, OperationFailed, PortalError
from portal.hypervisor import BackupDiskSpec, BackupProgress, PowerState, VolumeInfo, get_driver
from portal.jobs import JobContext, job_handler
from portal.models import AuditEvent, Job
from storage.models import Volume
from vms.choices import VMStatus
from vms.models import VM, VMDisk
from vms.specs import disk_spec

from .models import Backup, BackupSchedule
from .pools import backup_pool_ensure

log = logging.getLogger(__name__)
GIB = 1024**3
JOB_LABELS = {"backup.create": "Back up", "backup.finish": "End the backup export",
              "backup.restore": "Restore", "backup.delete": "Delete backup"}


def _backup(job: Job) -> Backup:
    return Backup.objects.select_related("vm__host", "pool__host", "parent").get(pk=job.params["backup_id"])


def _nbd_port(backup: Backup, vm: VM) -> int:
    """A port for a pull backup's export on the VM host's loopback: one of BACKUP_NBD_PORT_MIN..MAX that
    no other export on that host uses and, when the host is this machine, that is free here. (On a remote
    host a port taken by something else makes libvirt refuse the backup: it fails and cleans up.)"""
    taken = set()
    for uri in (Backup.objects.filter(mode=Backup.Mode.PULL, status__in=(Backup.Status.QUEUED, Backup.Status.RUNNING),
                                      vm__host_id=vm.host_id).exclude(pk=backup.pk).values_list("nbd_uri", flat=True)):
        if found := re.match(r"nbd://[^/]*:(\d+)", uri or ""):
            taken.add(int(found.group(1)))
    local = urlsplit(vm.host.uri).hostname in (None, "", "localhost", "127.0.0.1", "::1")
    for port in range(settings.BACKUP_NBD_PORT_MIN, settings.BACKUP_NBD_PORT_MAX + 1):
        if port in taken:
            continue
        if local:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise Conflict(f"No NBD port is free on the host of {vm.name} "
                   f"({settings.BACKUP_NBD_PORT_MIN}-{settings.BACKUP_NBD_PORT_MAX} are in use): finish a pull "
                   "backup there first.")


def _discard_files(backup: Backup) -> None:
    if backup.pool is None:
        return
    driver = get_driver(backup.pool.host.uri)
    for disk in backup.disks:
        try:
            driver.delete_volume(pool=backup.pool.name, name=disk["volume"])
        except PortalError as exc:
            log.warning("backup %s: could not delete %s: %s", backup.pk, disk["volume"], exc)


def _create_failed(job: Job, error: str) -> None:
    """Nothing half-made stays: the job in libvirt stops, the files and the checkpoint go; the backup
    shows as failed (it no longer counts against the quota)."""
    backup = _backup(job)
    vm = backup.vm
    if vm is not None and job.params.get("live"):
        driver = get_driver(vm.host.uri)
        try:
            driver.backup_abort(str(vm.uuid))
            if backup.checkpoint:
                driver.checkpoint_delete(str(vm.uuid), backup.checkpoint)
        except PortalError as exc:
            log.warning("backup %s: clean-up in libvirt failed: %s", backup.pk, exc)
    _discard_files(backup)
    # Its files are gone: it no longer holds the backup domain (which can then be removed).
    Backup.objects.filter(pk=backup.pk).update(status=Backup.Status.FAILED, last_error=error[:2000], size_bytes=0,
                                               nbd_uri="", pool=None, finished_at=timezone.now())
    audit(actor=job.actor, via=job.via, action=job.kind, target=vm, target_type="vm", target_id=str(backup.vm_id or ""),
          target_name=backup.vm_name, job=job, outcome=AuditEvent.Outcome.FAILED,
          message=f"Backup of {backup.vm_name} failed: {error}")


@job_handler("backup.create", on_failure=_create_failed)
def backup_create(ctx: JobContext) -> dict:
    backup = _backup(ctx.job)
    vm = backup.vm
    if vm is None:
        raise NotFound("The VM was deleted before it was backed up.")
    driver = get_driver(vm.host.uri)
    uuid = str(vm.uuid)
    pool = backup_pool_ensure(vm.host)
    Backup.objects.filter(pk=backup.pk).update(pool=pool, status=Backup.Status.RUNNING, started_at=timezone.now())
    backup.pool = pool
    base = driver.pool_info(pool.name).path or pool.path
    live = bool(ctx.params.get("live"))
    if live and driver.domain_info(uuid).state not in (PowerState.RUNNING, PowerState.PAUSED):
        raise Conflict(f"{vm.name} stopped before its backup began; back it up again (a full copy).")
    if backup.mode == Backup.Mode.PULL:
        port = _nbd_port(backup, vm)
        specs = [BackupDiskSpec(target=d["target"], scratch=os.path.join(base, f"{d['volume']}.scratch"))
                 for d in backup.disks]
        started = driver.backup_begin(uuid, disks=specs, mode="pull", port=port,
                                      incremental=backup.parent.checkpoint if backup.parent else None,
                                      checkpoint=backup.checkpoint or None)
        disks = [{**d, "nbd_uri": started.exports.get(d["target"], "")} for d in backup.disks]
        first = disks[0]["nbd_uri"]
        Backup.objects.filter(pk=backup.pk).update(disks=disks, nbd_uri=first, progress=0)
        audit(actor=ctx.job.actor, via=ctx.job.via, action="backup.exported", target=vm, job=ctx.job,
              message=f"Exporting the disks of {vm.name} over NBD at {first} until the backup is finished")
        return {"backup": backup.pk, "nbd_uri": first}
    ctx.progress(5, "Backing up" + ("" if live else " (a full copy of the stopped VM's disks)"))
    if live:
        specs = [BackupDiskSpec(target=d["target"], file=os.path.join(base, d["volume"])) for d in backup.disks]
        driver.backup_begin(uuid, disks=specs, mode="push",
                            incremental=backup.parent.checkpoint if backup.parent else None,
                            checkpoint=backup.checkpoint or None)
        last = [time.monotonic()]

        def progress(state: BackupProgress) -> None:
            if time.monotonic() - last[0] >= 1.0:
                last[0] = time.monotonic()
                Backup.objects.filter(pk=backup.pk).update(progress=state.percent)
                ctx.progress(5 + int(state.percent * 0.9), f"Backing up: {state.percent}%")

        driver.backup_wait(uuid, timeout=settings.BACKUP_TIMEOUT_SECONDS, progress=progress)
        if driver.is_test:  # the test driver writes no files: empty volumes stand for them
            for d in backup.disks:
                driver.create_volume(pool=pool.name, name=d["volume"], capacity_bytes=d["capacity_bytes"])
    else:
        for i, d in enumerate(backup.disks):
            ctx.progress(5 + int(90 * i / len(backup.disks)), f"Copying disk {d['target']}")
            driver.clone_volume(pool=pool.name, source=d["source_volume"], source_pool=d["source_pool"],
                                name=d["volume"], fmt="qcow2")
    present = {v.name: v for v in driver.list_volumes(pool=pool.name)}
    disks, size = [], 0
    for d in backup.disks:
        info = present.get(d["volume"])
        if info is None:
            raise OperationFailed(f"The backup file of disk {d['target']} is missing after the backup.")
        disks.append({**d, "path": info.path, "size_bytes": info.allocation_bytes})
        size += info.allocation_bytes
    Backup.objects.filter(pk=backup.pk).update(status=Backup.Status.READY, progress=100, disks=disks,
                                               size_bytes=size, finished_at=timezone.now())
    audit(actor=ctx.job.actor, via=ctx.job.via, action="backup.created", target=vm, job=ctx.job,
          message=f"Backed up {vm.name}: {backup.kind}, {size / 1024**2:.1f} MiB")
    return {"backup": backup.pk, "size_bytes": size, "kind": backup.kind}


def _finish_failed(job: Job, error: str) -> None:
    audit(actor=job.actor, via=job.via, action=job.kind, target_type="backup", target_id=str(job.params["backup_id"]),
          job=job, outcome=AuditEvent.Outcome.FAILED, message=error)


@job_handler("backup.finish", on_failure=_finish_failed)
def backup_finish(ctx: JobContext) -> dict:
    backup = _backup(ctx.job)
    if backup.vm is not None:
        get_driver(backup.vm.host.uri).backup_abort(str(backup.vm.uuid))
    # Its scratch files are gone with the export: a pull backup keeps nothing here, so it counts nothing.
    # ... and holds no backup domain (pool=None: removing the domain is not blocked by it).
    Backup.objects.filter(pk=backup.pk).update(status=Backup.Status.READY, nbd_uri="", progress=100, size_bytes=0,
                                               pool=None, finished_at=timezone.now())
    return {"backup": backup.pk}


def _delete_failed(job: Job, error: str) -> None:
    """The backup is as it was before (a failed one does not come back ready), with the reason."""
    previous = job.params.get("previous") or Backup.Status.READY
    Backup.objects.filter(pk=job.params["backup_id"]).update(status=previous, last_error=error[:2000])


@job_handler("backup.delete", on_failure=_delete_failed)
def backup_delete(ctx: JobContext) -> dict:
    backup = _backup(ctx.job)
    vm = backup.vm
    if vm is not None and backup.checkpoint and vm.status != VMStatus.DELETED:
        get_driver(vm.host.uri).checkpoint_delete(str(vm.uuid), backup.checkpoint)
    _discard_files(backup)
    Backup.objects.filter(parent=backup, status=Backup.Status.FAILED).update(parent=None)
    Backup.objects.filter(parent=backup, mode=Backup.Mode.PULL).update(parent=None)  # file-less: nothing to keep
    pk, name = backup.pk, backup.vm_name
    backup.delete()
    audit(actor=ctx.job.actor, via=ctx.job.via, action="backup.deleted", target_type="backup", target_id=str(pk),
          target_name=name, job=ctx.job, message=f"Deleted backup {pk} of {name}")
    return {"backup": pk}


# --- restore -------------------------------------------------------------------------------------

def chain_json(paths: list[str]) -> str:
    """A `json:` filename that reads the chain (oldest first) without touching its files: each
    incremental's unwritten clusters come from its parent (its own backing file is not used)."""
    spec: dict = {"driver": "qcow2", "file": {"driver": "file", "filename": paths[0]}}
    for path in paths[1:]:
        spec = {"driver": "qcow2", "file": {"driver": "file", "filename": path}, "backing": spec}
    return "json:" + json.dumps(spec)


def chain_convert(paths: list[str], dest: str) -> None:
    """Flatten a backup chain into one standalone qcow2 file."""
    done = subprocess.run(["qemu-img", "convert", "-U", "-O", "qcow2", chain_json(paths), dest],
                          capture_output=True, text=True, timeout=24 * 3600)
    if done.returncode != 0:
        raise OperationFailed("The backup chain could not be read.", detail=done.stderr.strip()[-1000:])


def _restore_failed(job: Job, error: str) -> None:
    """In place: the VM keeps its disks (the job swaps them in only once all are restored). To a new VM:
    the VM made for it is deleted (nothing half-made stays charged)."""
    vm = VM.objects.filter(pk=int(job.target_id)).first()
    audit(actor=job.actor, via=job.via, action=job.kind, target=vm, job=job, outcome=AuditEvent.Outcome.FAILED,
          message=f"Restore from backup {job.params.get('backup_id')} failed: {error}")
    if vm is None or job.params.get("in_place") or vm.status in (VMStatus.DELETING, VMStatus.DELETED):
        return
    from vms.services import vm_delete  # the VM rules: delete it like its owner would

    # This job is over: say so first, so that it no longer holds the VM it made (vm_delete waits for it).
    Job.objects.filter(pk=job.pk).update(status=JobStatus.FAILED)
    try:
        vm_delete(actor=job.actor, via=job.via, vm=vm.pk)
    except PortalError as exc:
        log.warning("restore %s failed and its new VM %s could not be deleted: %s", job.pk, vm.pk, exc)
        VM.objects.filter(pk=vm.pk).update(last_error=f"Its restore failed ({error}); delete it."[:2000])


@job_handler("backup.restore", on_failure=_restore_failed)
def backup_restore(ctx: JobContext) -> dict:
    """Each disk is restored into a new volume first; only when every one is there does the VM take them
    (its definition points at the new files, the old ones are deleted). A failure before that leaves the
    VM's disks as they were and no restored file behind."""
    chain = [Backup.objects.select_related("pool__host").get(pk=pk) for pk in ctx.params["chain"]]
    vm = VM.objects.select_related("host").get(pk=int(ctx.job.target_id))
    if not ctx.params.get("in_place"):
        ctx.progress(5, "Waiting for the new VM to be made")
        deadline = time.monotonic() + 900
        while vm.status == VMStatus.CREATING and time.monotonic() < deadline:
            time.sleep(0.5)
            vm.refresh_from_db()
        if vm.status != VMStatus.STOPPED:
            raise Conflict(f"The new VM {vm.name} is {vm.get_status_display().lower()}, not stopped: "
                           "its disks were not restored.")
    tip = chain[-1]
    assert tip.pool is not None  # restore_chain_check saw to it
    source = get_driver(tip.pool.host.uri)
    token = str(ctx.job.pk).replace("-", "")[:8]
    begun: list[tuple[str, str, str]] = []  # (host uri, pool, name) of every new volume, for the clean-up
    staged: list[tuple[VMDisk, VolumeInfo, int]] = []
    try:
        for i, disk in enumerate(tip.disks):
            target = disk["target"]
            ctx.progress(10 + int(80 * i / len(tip.disks)), f"Restoring disk {target}")
            attached = vm.disks.select_related("volume__pool__host").get(target=target)
            volume = attached.volume
            dest = get_driver(volume.pool.host.uri)
            capacity = max(1, math.ceil(disk["capacity_bytes"] / GIB))
            name = f"{vm.domain_name}-{target}-restore-{token}.qcow2"
            begun.append((volume.pool.host.uri, volume.pool.name, name))
            if source.is_test or dest.is_test:  # the test driver has no files: an empty volume stands for it
                info = dest.create_volume(pool=volume.pool.name, name=name, capacity_bytes=capacity * GIB)
            else:
                paths = [next(d["path"] for d in member.disks if d["target"] == target) for member in chain]
                staging = settings.IMAGE_STAGING_DIR
                os.makedirs(staging, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=staging) as tmp:
                    flat = os.path.join(tmp, "restore.qcow2")
                    chain_convert(paths, flat)
                    info = dest.upload_volume(pool=volume.pool.name, name=name, source_path=flat)
            staged.append((attached, info, capacity))
    except BaseException:
        _drop_volumes(begun)
        raise
    ctx.progress(92, "Swapping the restored disks in")
    host = get_driver(vm.host.uri)
    for n, (attached, info, capacity) in enumerate(staged):
        volume = attached.volume
        old = volume.name
        volume.name, volume.path = info.name, info.path
        try:
            host.replace_disk_config(str(vm.uuid), disk_spec(attached))
        except BaseException:
            _drop_volumes(begun[n:])  # the disks not swapped yet keep their old files
            raise
        Volume.objects.filter(pk=volume.pk).update(name=info.name, path=info.path, backing_image=None, copy_of=None,
                                                   capacity_gib=capacity)
        try:
            get_driver(volume.pool.host.uri).delete_volume(pool=volume.pool.name, name=old)
        except PortalError as exc:
            log.warning("restore of %s: the old file %s stays: %s", vm.pk, old, exc)
    host.checkpoints_drop(str(vm.uuid))  # they described the disks just replaced
    if target_gib := tip.vm_config.get("disk_gib"):
        VM.objects.filter(pk=vm.pk).update(disk_gib=target_gib)
    audit(actor=ctx.job.actor, via=ctx.job.via, action="backup.restored", target=vm, job=ctx.job,
          message=f"Restored {vm.name} from backup {tip.pk} ({len(chain)} in the chain)")
    return {"vm": vm.pk, "chain": [b.pk for b in chain]}


def _drop_volumes(names: list[tuple[str, str, str]]) -> None:
    for uri, pool, name in names:
        try:
            get_driver(uri).delete_volume(pool=pool, name=name)
        except PortalError:
            pass  # never made (the failure was before it), or the host is gone: nothing to keep


# --- schedules and retention (housekeeping) --------------------------------------------------------

def _end_stale_exports(now: datetime) -> int:
    """Pull backups exported for longer than BACKUP_PULL_TIMEOUT_SECONDS: the export ends, the checkpoint
    made with it goes (the tool may not have read everything), the backup is failed with the reason."""
    limit = now - timedelta(seconds=settings.BACKUP_PULL_TIMEOUT_SECONDS)
    ended = 0
    stale = Backup.objects.select_related("vm__host").filter(mode=Backup.Mode.PULL, status=Backup.Status.RUNNING,
                                                             started_at__lt=limit)
    for backup in stale:
        vm = backup.vm
        if vm is not None:
            driver = get_driver(vm.host.uri)
            try:
                driver.backup_abort(str(vm.uuid))
                if backup.checkpoint:
                    driver.checkpoint_delete(str(vm.uuid), backup.checkpoint)
            except PortalError as exc:
                log.warning("pull backup %s: ending the export failed: %s", backup.pk, exc)
                continue  # the host does not answer: tried again on the next turn
        hours = settings.BACKUP_PULL_TIMEOUT_SECONDS / 3600
        error = f"The NBD export was not finished within {hours:g} h and was ended."
        Backup.objects.filter(pk=backup.pk, status=Backup.Status.RUNNING).update(
            status=Backup.Status.FAILED, nbd_uri="", size_bytes=0, pool=None, last_error=error, finished_at=now)
        audit(actor=backup.created_by, via="system", action="backup.export.timeout", target=vm, target_type="vm",
              target_id=str(backup.vm_id or ""), target_name=backup.vm_name, outcome=AuditEvent.Outcome.FAILED,
              message=f"Pull backup {backup.pk} of {backup.vm_name}: {error}")
        ended += 1
    return ended


def backups_housekeeping(now: datetime | None = None) -> dict[str, int]:
    """End pull exports past their timeout, start the due scheduled backups (a full one every
    incrementals+1, else incremental when possible), then delete whole chains beyond each schedule's
    keep_chains (oldest first)."""
    from .services import backup_create, backup_delete  # services imports nothing of this module's

    now = now or timezone.now()
    started = deleted = 0
    _end_stale_exports(now)
    for schedule in BackupSchedule.objects.select_related("vm__owner").filter(enabled=True, next_run_at__lte=now):
        vm = schedule.vm
        if vm.status in (VMStatus.DELETING, VMStatus.DELETED):
            continue
        since_full = 0
        for b in Backup.objects.filter(vm=vm, status=Backup.Status.READY, mode=Backup.Mode.PUSH).order_by("-created_at", "-id"):
            if b.kind == Backup.Kind.FULL:
                break
            since_full += 1
        last = Backup.objects.filter(vm=vm, status=Backup.Status.READY, mode=Backup.Mode.PUSH).exists()
        kind = "auto" if last and since_full < schedule.incrementals else "full"
        # An incremental that failed (a bitmap or checkpoint missing in the disk, say) is not tried again:
        # the schedule's next backup is a full one.
        newest = Backup.objects.filter(vm=vm, schedule=schedule).order_by("-created_at", "-id").first()
        if newest is not None and newest.status == Backup.Status.FAILED and newest.kind == Backup.Kind.INCREMENTAL:
            kind = "full"
        try:
            backup_create(actor=schedule.created_by or vm.owner, via="system", vm=vm, kind=kind, schedule=schedule)
            started += 1
            error = ""
        except PortalError as exc:
            error = exc.message if hasattr(exc, "message") else str(exc)
        BackupSchedule.objects.filter(pk=schedule.pk).update(
            last_run_at=now, last_error=error[:2000],
            next_run_at=now + timedelta(hours=schedule.interval_hours))
    # Retention: only enabled schedules, only the chains they made (a backup made by hand or a pull
    # backup is its owner's to delete; a chain holding one is kept whole).
    for schedule in BackupSchedule.objects.select_related("vm").filter(enabled=True):
        fulls = list(Backup.objects.filter(vm=schedule.vm, schedule=schedule, mode=Backup.Mode.PUSH,
                                           kind=Backup.Kind.FULL, status=Backup.Status.READY)
                     .order_by("-created_at", "-id"))
        for old in fulls[schedule.keep_chains:]:
            deleted += _delete_chain(old, backup_delete, schedule=schedule)
    return {"started": started, "deleted": deleted}


def _delete_chain(full: Backup, backup_delete: object, *, schedule: BackupSchedule) -> int:
    """Delete a full backup and every incremental on it, tips first; nothing when one of them is not the
    schedule's own (made by hand, or a pull backup)."""
    members: list[Backup] = [full]
    frontier = [full]
    while frontier:
        children = list(Backup.objects.filter(parent__in=frontier))
        members.extend(children)
        frontier = children
    foreign = [m.pk for m in members if m.schedule_id != schedule.pk and m.status != Backup.Status.FAILED]
    if foreign:
        log.info("retention: the chain of backup %s is kept: backup(s) %s were not made by its schedule",
                 full.pk, foreign)
        return 0
    count = 0
    actor = full.created_by or full.owner
    for member in reversed(members):
        if member.status in (Backup.Status.READY, Backup.Status.FAILED):
            try:
                backup_delete(actor=actor, via="system", backup=member)  # type: ignore[operator]
                count += 1
            except PortalError as exc:
                log.warning("retention: backup %s stays: %s", member.pk, exc)
                break
    return count
