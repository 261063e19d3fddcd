"""Live migration of VMs between hosts of a cluster, and VMs that moved behind the portal's back.

Record phase (`vm_migrate`, one transaction under the VM's row lock): administrators (and the system
actor: maintenance, balancing, HA) move a running or paused VM to a host they name, or to the best
host the cluster's scheduler picks; the VM goes `migrating` (owned by the job) and a `vm.migrate` job
is queued. Act phase (the job handler here): the destination gets the VM's networks and, for disks on
host-local pools, blank volumes of the same size that libvirt fills while the guest runs
(copy-storage); disks on pools marked shared are only re-pointed to the destination's pool row. After
the gateway's peer-to-peer migration the VM's host, disks and state change in one short transaction,
and then the source's disks are removed. A failed migration leaves the VM running on its source
(libvirt's guarantee); the destination's new volumes go.

A domain of this portal found on another host than its record says (`virsh migrate` by hand) is
recognised by reconcile (`vm_moved`), and Start looks for the VM on the other hosts before it defines
its domain again (`vm_locate_for_start`): never two copies of one VM.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from cluster.choices import HostStatus
from cluster.hostconfig import host_graphics_listen
from cluster.models import Host
from cluster.scheduler import VMRequest, schedule
from networks.models import Network
from networks.services import network_ensure_on_host
from portal.actors import Actor, require_admin
from portal.audit import audit
from portal.choices import Via
from portal.exceptions import Conflict, InvalidState, NotFound, PortalError, ValidationFailed
from portal.hypervisor import MigrationProgress, PowerState, get_driver
from portal.jobs import JobContext, job_create, job_handler
from portal.models import AuditEvent, Job
from storage.copies import image_copy_ensure
from storage.models import StoragePool, Volume
from storage.pools import pool_for_host
from storage.selectors import image_boot_files
from storage.services import volume_destroy, volume_write

from .choices import VMStatus
from .cloudinit import build_seed
from .lifecycle import status_for
from .models import VM, VMDisk
from .scheduling import vm_request
from .services import SEED_TARGET, ActionResult, _active_job, _snapshot_busy, vm_set_status

log = logging.getLogger(__name__)

MIGRATE_JOB = "vm.migrate"
MIB = 1024 * 1024


# --- what moves where ---------------------------------------------------------------------------

def migration_uri(host: Host) -> str:
    """The URI another host's libvirtd dials to migrate to `host`: its migration URI, else its libvirt
    URI when that is a network URI ("" when neither: such a host cannot receive a migration)."""
    if host.migration_uri:
        return host.migration_uri
    uri = host.uri
    scheme, _, rest = uri.partition("://")
    if rest and not rest.startswith("/") and "+unix" not in scheme and not scheme.startswith("test"):
        return uri
    return ""


def migration_host_resolve(key: Host | str | int | None) -> Host | None:
    """A destination host given by the doors as a Host, an id or a name (None/blank: the best host)."""
    if key is None or isinstance(key, Host):
        return key
    text = str(key).strip()
    if not text:
        return None
    host = (Host.objects.filter(pk=int(text)).first() if text.isascii() and text.isdigit() else None) \
        or Host.objects.filter(name=text).first()
    if host is None:
        raise ValidationFailed(f"Unknown host {text[:60]!r}.", field="host")
    return host


def migration_hosts(vm: VM) -> list[Host]:
    """The hosts a door may offer as destinations: the other enabled hosts of the VM's cluster (the
    service still decides)."""
    qs = Host.objects.filter(enabled=True).exclude(pk=vm.host_id).order_by("name")
    return list(qs.filter(cluster_id=vm.host.cluster_id) if vm.host.cluster_id else qs.none())


@dataclass(frozen=True)
class DiskMove:
    """One disk of a migrating VM: its volume now, the destination's pool, and how it gets there."""

    disk: VMDisk
    volume: Volume
    dest_pool: StoragePool
    shared: bool  # the same file on both hosts: the row is re-pointed, nothing is copied
    seed: bool  # the cloud-init seed (read-only, made by the portal): written again there, not mirrored


def _dest_pool(pool: StoragePool, dest: Host) -> StoragePool:
    if pool.shared:
        twin = StoragePool.objects.filter(host=dest, name=pool.name, path=pool.path, shared=True).first()
        if twin is None:
            raise Conflict(f"Host {dest.name} has no shared pool {pool.name} at {pool.path}: a disk on it cannot "
                           "move there without a copy. Register the shared pool on that host first.")
        return twin
    return StoragePool.objects.filter(host=dest, name=pool.name).first() or pool_for_host(dest)


def disk_moves(vm: VM, dest: Host) -> list[DiskMove]:
    moves = []
    for disk in vm.disks.select_related("volume__pool").order_by("target"):
        volume = disk.volume
        # issue #11: a data disk other VMs use stays where they are; only shared storage lets it go along.
        if not volume.pool.shared and VMDisk.objects.filter(volume=volume).exclude(vm=vm).exclude(
                vm__status=VMStatus.DELETED).exists():
            raise Conflict(f"Disk {volume.label or disk.target} of {vm.name} is attached to other VMs on host "
                           f"{volume.pool.host.name}: detach it first (or keep it on shared storage).")
        moves.append(DiskMove(disk=disk, volume=volume, dest_pool=_dest_pool(volume.pool, dest),
                              shared=volume.pool.shared,
                              seed=disk.readonly and disk.target == SEED_TARGET and volume.format == "raw"))
    return moves


def _vm_request(vm: VM) -> VMRequest:
    return vm_request(vm, for_migration=True)  # pinning, tags, affinity (vms.scheduling)


# --- record phase ---------------------------------------------------------------------------------

def vm_migrate(*, actor: Actor, via: str, vm: VM | int, host: Host | str | int | None = None,
               reason: str = "") -> ActionResult:
    """Live-migrate a running or paused VM to `host` (None: the best host of its cluster by its policy).

    Administrators only (and the system actor, None: maintenance, balancing, HA); users cannot choose
    hosts. Refused (and audited as denied) when the VM is not running, its host is unreachable, a job
    or snapshot is under way, or the destination is not an up, enabled host of the same cluster that
    passes the scheduler's filters.
    """
    require_admin(actor, "Only administrators migrate VMs between hosts.")
    host = migration_host_resolve(host)  # a name or id from a door; unknown: ValidationFailed
    reason = str(reason or "").strip()[:200]
    pk = vm.pk if isinstance(vm, VM) else vm
    refused: PortalError | None = None
    with transaction.atomic():
        try:
            vm = VM.objects.select_for_update().get(pk=pk)
        except VM.DoesNotExist:
            raise NotFound(f"VM {pk} not found.") from None
        vm = VM.objects.select_related("host__cluster", "cdrom__pool").get(pk=vm.pk)
        try:
            target, placement = _check_migration(vm, host)
        except PortalError as exc:
            refused = exc
        else:
            job = job_create(kind=MIGRATE_JOB, actor=actor, via=via, target=vm, max_attempts=2, params={
                "source_host_id": vm.host_id, "target_host_id": target.pk, "previous": vm.status,
                "placement": placement, "reason": reason})
            why = f" ({reason})" if reason else ""
            audit(actor=actor, via=via, action="vm.migrate", target=vm, job=job, outcome=AuditEvent.Outcome.REQUESTED,
                  message=f"Migrate {vm.name} from {vm.host.name} to {target.name}"
                          f"{' (best host)' if host is None else ''}{why}",
                  data={"source": vm.host.name, "destination": target.name, "placement": placement})
            vm_set_status(vm, VMStatus.MIGRATING, last_error="")
    if refused is not None:
        audit(actor=actor, via=via, action="vm.migrate", target=vm, outcome=AuditEvent.Outcome.DENIED,
              message=refused.message)
        raise refused
    return ActionResult(vm, job, f"Migrating {vm.name} to {target.name}.")


def _check_migration(vm: VM, host: Host | None) -> tuple[Host, dict]:
    if vm.status not in VMStatus.ACTIVE:
        state = vm.get_status_display().lower()
        busy = " (another action is under way)" if vm.is_transitional else ""
        raise InvalidState(f"Cannot migrate {vm.name}: it is {state}{busy}. Only a running or paused VM migrates live.",
                           status=vm.status)
    source = vm.host
    if source.status not in HostStatus.REACHABLE:
        raise InvalidState(f"Cannot migrate {vm.name}: its host {source.name} is "
                           f"{source.get_status_display().lower()}.", status=vm.status)
    if (snap := _snapshot_busy(vm)) is not None:
        raise InvalidState(f"Cannot migrate {vm.name}: snapshot {snap.name} is busy. Try again when it has finished.",
                           status=vm.status)
    if (job := _active_job(vm)) is not None:
        raise InvalidState(f"Cannot migrate {vm.name}: a {job.kind.split('.', 1)[-1].replace('.', ' ')} job is "
                           f"{job.get_status_display().lower()}. Try again when it has finished.", status=vm.status)
    cdrom = vm.cdrom
    if cdrom is not None and not cdrom.pool.shared:
        raise InvalidState(f"Cannot migrate {vm.name}: the CD {cdrom.name} in its drive is stored on its host "
                           "only. Eject it first.", status=vm.status)
    request = _vm_request(vm)
    if host is not None:
        if host.pk == source.pk:
            raise ValidationFailed(f"{vm.name} runs on {host.name} already.", field="host")
        if host.cluster_id != source.cluster_id:
            raise ValidationFailed(f"Host {host.name} is not in {vm.name}'s cluster "
                                   f"({source.cluster.name if source.cluster else 'none'}).", field="host")
        if not host.enabled:
            raise ValidationFailed(f"Host {host.name} is disabled: it takes no VMs.", field="host")
        if host.status not in HostStatus.PLACEABLE:
            raise ValidationFailed(f"Host {host.name} is {host.get_status_display().lower()}: it takes no VMs now.",
                                   field="host")
        placement = schedule(request=request, hosts=Host.objects.filter(pk=host.pk), lock=True)
    else:
        placement = schedule(request=request, cluster=source.cluster, exclude_host_ids=frozenset({source.pk}),
                             lock=True)
    target = placement.host
    if not migration_uri(target):
        raise ValidationFailed(f"Host {target.name} has no migration URI (its libvirt URI is local): set one "
                               "other hosts can reach, e.g. qemu+tcp://ADDRESS/system.", field="host")
    disk_moves(vm, target)  # every disk has somewhere to go (raises Conflict otherwise)
    return target, dict(placement.explanation)


# --- act phase ------------------------------------------------------------------------------------

def _vm(job: Job) -> VM:
    return VM.objects.select_related("host", "image", "owner").get(pk=int(job.target_id))


def _active_state(driver_uri: str, uuid: str) -> PowerState | None:
    """The domain's state on a host when it runs there (None: absent or not running)."""
    try:
        state = get_driver(driver_uri).domain_info(uuid).state
    except NotFound:
        return None
    return state if state.is_active else None


def _prepare_destination(ctx: JobContext, vm: VM, moves: list[DiskMove], dest: Host) -> tuple[dict[str, str], list[str]]:
    """The destination's networks and volumes; returns the path map (source path -> destination path)
    and the disks libvirt copies (targets)."""
    for network in Network.objects.filter(nics__vm=vm).distinct().prefetch_related("reservations"):
        network_ensure_on_host(network=network, host=dest)
    source_driver, dest_driver = get_driver(vm.host.uri), get_driver(dest.uri)
    path_map: dict[str, str] = {}
    copied: list[str] = []
    for move in moves:
        if move.shared:
            continue
        old = move.volume
        new = Volume.objects.filter(pool=move.dest_pool, name=old.name).first()
        if new is not None and new.attachments.exists():
            raise Conflict(f"Host {dest.name} has a disk named {old.name} already, used by another VM.")
        if new is None:
            new = Volume.objects.create(pool=move.dest_pool, name=old.name, format=old.format,
                                        capacity_gib=old.capacity_gib, copy_of=old.backing_image or old.copy_of)
        try:  # what an interrupted attempt left: made again (the domain is not there to use it)
            dest_driver.volume_info(pool=move.dest_pool.name, name=old.name)
        except NotFound:
            pass
        else:
            dest_driver.delete_volume(pool=move.dest_pool.name, name=old.name)
        if move.seed:
            ctx.progress(6, f"Writing the cloud-init seed on {dest.name}")
            volume_write(volume=new, data=build_seed(vm))
        else:
            ctx.progress(6, f"Creating disk {move.disk.target} on {dest.name}")
            capacity = source_driver.volume_info(pool=old.pool.name, name=old.name).capacity_bytes
            info = dest_driver.create_volume(pool=move.dest_pool.name, name=old.name, capacity_bytes=capacity,
                                             fmt=old.format if old.format in ("qcow2", "raw") else "qcow2")
            Volume.objects.filter(pk=new.pk).update(path=info.path)
            new.path = info.path
            copied.append(move.disk.target)
        if old.path and new.path and old.path != new.path:
            path_map[old.path] = new.path
    # Kernel and initrd: the destination's own copies (made now if needed), never the source's files.
    image = vm.image
    if image is not None and image.boot_mode == image.BootMode.KERNEL and image.kind != image.Kind.ISO:
        ctx.progress(8, f"Copying the boot files of {image.name} to {dest.name}")
        image_copy_ensure(image=image, host=dest)
        for old_path, new_path in zip(image_boot_files(image=image, host=vm.host),
                                      image_boot_files(image=image, host=dest), strict=True):
            if old_path and new_path and old_path != new_path:
                path_map[old_path] = new_path
    return path_map, copied


def _progress_reporter(ctx: JobContext) -> Callable[[MigrationProgress], None]:
    last = {"percent": -100, "at": 0.0}

    def report(p: MigrationProgress) -> None:
        now = time.monotonic()
        if abs(p.percent - last["percent"]) < 5 and now - last["at"] < 2:
            return
        last.update(percent=p.percent, at=now)
        ctx.progress(10 + int(p.percent * 0.85),
                     f"migrating: {p.percent}% ({p.data_processed // MIB}/{p.data_total // MIB} MiB)")

    return report


@dataclass
class _Outcome:
    wall_seconds: float | None = None
    downtime_ms: int | None = None
    data_mib: int | None = None


def _finish(job: Job, vm: VM, source: Host, dest: Host, moves: list[DiskMove], state: PowerState,
            outcome: _Outcome, note: str = "") -> dict:
    """The VM lives on `dest` now: host, disks and state in one short transaction."""
    with transaction.atomic():
        VM.objects.select_for_update().filter(pk=vm.pk).first()
        for move in moves:
            if move.shared:
                Volume.objects.filter(pk=move.volume.pk).update(pool=move.dest_pool)
            else:
                new = Volume.objects.get(pool=move.dest_pool, name=move.volume.name)
                VMDisk.objects.filter(pk=move.disk.pk).update(volume=new)
        VM.objects.filter(pk=vm.pk).update(host=dest)
        vm.host = dest
        vm_set_status(vm, status_for(state), last_error="", power_state=state, observed_at=timezone.now())
        result = {"source": source.name, "destination": dest.name, "wall_seconds": outcome.wall_seconds,
                  "downtime_ms": outcome.downtime_ms, "data_mib": outcome.data_mib}
        down = f", {outcome.downtime_ms} ms downtime" if outcome.downtime_ms is not None else ""
        took = f" in {outcome.wall_seconds:.2f} s" if outcome.wall_seconds is not None else ""
        audit(actor=job.actor, via=job.via, action="vm.migrated", target=vm, job=job,
              message=f"Migrated {vm.name} from {source.name} to {dest.name}{took}{down}{note}", data=result)
    return result


def _remove_source_disks(moves: list[DiskMove], source: Host) -> list[str]:
    """The source's copies of the disks that were copied go (their rows and files); what cannot be
    removed now (the source became unreachable) is named in the result."""
    left = []
    for move in moves:
        if move.shared:
            continue
        try:
            volume_destroy(volume=Volume.objects.select_related("pool__host").get(pk=move.volume.pk))
        except Volume.DoesNotExist:
            pass
        except PortalError as exc:
            log.warning("source disk %s on %s: %s", move.volume.name, source.name, exc.detail or exc.message)
            left.append(move.volume.name)
    return left


@job_handler(MIGRATE_JOB, on_failure=lambda job, error: _migrate_failed(job, error))  # defined below
def migrate(ctx: JobContext) -> dict:
    p = ctx.params
    vm = _vm(ctx.job)
    source = Host.objects.get(pk=p["source_host_id"])
    dest = Host.objects.get(pk=p["target_host_id"])
    uuid = str(vm.uuid)
    if vm.host_id == dest.pk:  # an earlier attempt finished the bookkeeping
        return dict(ctx.job.result or {}) or {"source": source.name, "destination": dest.name, "already_done": True}
    if vm.status != VMStatus.MIGRATING:
        raise InvalidState(f"{vm.name} is {vm.get_status_display().lower()}, not migrating.")
    moves = disk_moves(vm, dest)
    state = _active_state(dest.uri, uuid)
    note = ""
    if state is not None and _active_state(source.uri, uuid) is None:
        ctx.progress(90, f"{vm.name} runs on {dest.name} already: recording it")
        outcome = _Outcome()
        note = " (found running there on a retry)"
    elif state is not None:
        # Active on both: an earlier attempt's migration is still under way (its worker died, libvirt's
        # job did not). Its disks there are in use: never re-made; the VM stays on its source.
        raise Conflict(f"A migration of {vm.name} to {dest.name} is still under way on the hosts; try again "
                       "when it has finished.")
    else:
        ctx.progress(5, f"Preparing {dest.name}")
        path_map, copied = _prepare_destination(ctx, vm, moves, dest)
        source_driver, dest_driver = get_driver(source.uri), get_driver(dest.uri)
        # Always a destination XML: the files' paths there, and the display on the destination's address.
        dest_xml, persist_xml = source_driver.migration_xml(uuid, path_map,
                                                            graphics_listen=host_graphics_listen(dest))
        what = f"copying {len(copied)} disk(s)" if copied else "shared storage" if moves else "no disks"
        ctx.progress(10, f"Migrating {vm.name} to {dest.name} ({what})")
        stats = source_driver.migrate(
            uuid, dest_uri=migration_uri(dest), dest_driver=dest_driver, dest_xml=dest_xml, persist_xml=persist_xml,
            copy_storage=bool(copied), migrate_disks=tuple(copied), unsafe=any(m.shared for m in moves),
            progress=_progress_reporter(ctx), max_downtime_ms=settings.MIGRATION_MAX_DOWNTIME_MS or None,
            timeout=settings.MIGRATION_TIMEOUT_SECONDS or None)
        outcome = _Outcome(wall_seconds=round(stats.wall_seconds, 3), downtime_ms=stats.downtime_ms,
                           data_mib=(stats.data_processed + stats.disk_processed) // MIB)
        state = get_driver(dest.uri).domain_info(uuid).state
    ctx.progress(95, "Recording the new host")
    result = _finish(ctx.job, vm, source, dest, moves, state, outcome, note)
    left = _remove_source_disks(moves, source)
    _undefine_leftover(source, uuid)
    if left:
        result["source_disks_left"] = left
    return result


def _undefine_leftover(source: Host, uuid: str) -> None:
    """UNDEFINE_SOURCE removed the source's definition; one left there (shut off) is a stale copy: it goes."""
    try:
        driver = get_driver(source.uri)
        info = driver.domain_info(uuid)
        if not info.state.is_active:
            driver.undefine(uuid)
    except PortalError:
        pass


def _migrate_failed(job: Job, error: str) -> None:
    """The VM stays where libvirt left it: running on its source (the destination's new volumes go),
    or, should it run on the destination after all, recorded there."""
    vm = _vm(job)
    dest = Host.objects.filter(pk=job.params.get("target_host_id")).first()
    if dest is None or vm.host_id == dest.pk:
        audit(actor=job.actor, via=job.via, action="vm.migrate", target=vm, job=job,
              outcome=AuditEvent.Outcome.FAILED, message=f"Migration of {vm.name}: {error}")
        return
    uuid = str(vm.uuid)
    try:
        state: PowerState | None = get_driver(vm.host.uri).domain_info(uuid).state
    except NotFound:
        state = None
    except PortalError:
        state = PowerState(job.params.get("previous") == VMStatus.PAUSED and "paused" or "running")
    # Where the destination stands: the domain there (None: absent), or unknown (it does not answer).
    dest_known = True
    try:
        there: PowerState | None = get_driver(dest.uri).domain_info(uuid).state
    except NotFound:
        there = None
    except PortalError:
        there, dest_known = None, False
    if state is None and there is not None and there.is_active:
        moves = disk_moves(vm, dest)
        _finish(job, vm, vm.host, dest, moves, there, _Outcome(), note=" (the job failed after the move)")
        _remove_source_disks(moves, vm.host)
        return
    if state is not None:
        # The destination's new volumes go only when its libvirtd says the domain is not there: a domain
        # defined or running there (the source did not answer, or an earlier attempt's migration goes on)
        # may be using them. What stays is named for an administrator (orphans beat a lost disk).
        names = list(vm.volumes.values_list("name", flat=True))
        leftovers = (Volume.objects.filter(pool__host=dest, name__in=names, attachments__isnull=True)
                     .select_related("pool__host"))
        if dest_known and there is None:
            for volume in leftovers:
                try:
                    volume_destroy(volume=volume)
                except PortalError as exc:
                    log.warning("pre-created disk %s on %s: %s", volume.name, dest.name, exc.detail or exc.message)
        elif leftovers:
            why = (f"{dest.name} does not answer" if not dest_known
                   else f"the VM's domain is {there} on {dest.name}")
            audit(actor=job.actor, via=job.via, action="vm.migrate", target=vm, job=job,
                  outcome=AuditEvent.Outcome.FAILED,
                  message=f"Migration of {vm.name}: the disks made on {dest.name} are kept ({why}): "
                          + ", ".join(v.name for v in leftovers) + ". An administrator checks and removes them.")
    vm_set_status(vm, status_for(state), last_error=f"Migration to {dest.name} failed: {error}",
                  power_state=state or "", observed_at=timezone.now())
    audit(actor=job.actor, via=job.via, action="vm.migrate", target=vm, job=job, outcome=AuditEvent.Outcome.FAILED,
          message=f"Migration of {vm.name} to {dest.name} failed; it stays on {vm.host.name}: {error}")


# --- a VM found on another host ---------------------------------------------------------------------

def vm_moved(*, vm: VM, host: Host, state: PowerState | None, source: str) -> VM:
    """The VM's domain lives on `host`, not where its record says (migrated outside the portal): the
    record follows it, with its disks where a pool of `host` holds their files (best effort: a disk
    whose file no pool of the new host holds keeps its row, and the audit says so)."""
    old = vm.host
    moved_disks, unmatched = [], []
    try:
        paths = get_driver(host.uri).domain_definition(str(vm.uuid)).disks
        live = {d.target: d.path for d in paths if d.path}
    except PortalError:
        live = {}
    with transaction.atomic():
        VM.objects.select_for_update().filter(pk=vm.pk).first()
        for disk in vm.disks.select_related("volume__pool"):
            volume, path = disk.volume, live.get(disk.target) or disk.volume.path
            pool = next((p for p in StoragePool.objects.filter(host=host)
                         if path and path.startswith(p.path.rstrip("/") + "/")), None)
            if pool is None:
                unmatched.append(disk.target)
                continue
            name = path.rsplit("/", 1)[-1]
            if volume.pool_id != pool.pk and not Volume.objects.filter(pool=pool, name=name).exclude(
                    pk=volume.pk).exists():
                Volume.objects.filter(pk=volume.pk).update(pool=pool, name=name, path=path)
                moved_disks.append(disk.target)
        VM.objects.filter(pk=vm.pk).update(host=host)
        vm.host = host
        status = status_for(state) if vm.status not in VMStatus.TRANSITIONAL else vm.status
        vm_set_status(vm, status, last_error="", power_state=state or "", observed_at=timezone.now())
        disks = (f"; disks {', '.join(moved_disks)} recorded in the pools of {host.name}" if moved_disks else "")
        if unmatched:
            disks += (f"; disks {', '.join(unmatched)} are in no pool of {host.name} (their records still name "
                      f"{old.name}'s files)")
        audit(actor=None, via=Via.SYSTEM, action="vm.moved", target=vm,
              message=f"{vm.name} runs on {host.name}, not {old.name}: it was moved outside the portal "
                      f"({source}); its record follows it{disks}",
              data={"from": old.name, "to": host.name, "disks_moved": moved_disks, "disks_unmatched": unmatched})
    return vm


def _look_elsewhere(vm: VM) -> tuple[list[tuple[Host, PowerState]], list[Host]]:
    """Where else the VM's uuid is defined: (host, state) on the other reachable hosts of its cluster
    (every enabled host when it has none), and the hosts that could not be asked (which may run it)."""
    uuid = str(vm.uuid)
    others = Host.objects.exclude(pk=vm.host_id)
    others = others.filter(cluster_id=vm.host.cluster_id) if vm.host.cluster_id else others.filter(enabled=True)
    found: list[tuple[Host, PowerState]] = []
    unreachable: list[Host] = []
    for host in others:
        if host.status not in HostStatus.REACHABLE:
            # A disabled host may still run VMs; a host on standby (emptied, then powered off) or confirmed
            # down (fenced, or declared off by an administrator) runs nothing.
            if host.status != HostStatus.STANDBY and host.confirmed_down_at is None:
                unreachable.append(host)
            continue
        try:
            found.append((host, get_driver(host.uri).domain_info(uuid).state))
        except NotFound:
            continue
        except PortalError:
            unreachable.append(host)
    found.sort(key=lambda hs: not hs[1].is_active)  # a running copy first
    return found, unreachable


def vm_find_elsewhere(vm: VM) -> tuple[Host, PowerState] | None:
    """The host the VM's domain is on when it is missing on its record's host (reconcile), if any."""
    found, _ = _look_elsewhere(vm)
    return found[0] if found else None


def vm_locate_for_start(vm: VM) -> VM:
    """Before a start defines or starts the VM's domain on its host: where is it really?

    The other hosts of its cluster are asked for its uuid. A copy running elsewhere wins (the record
    follows it, and the start is a no-op there); a copy defined elsewhere while none is on the record's
    host is used where it is. When the domain is missing on its host and another host of the cluster
    cannot be asked, the start is refused: it may be there, and two copies must never run.
    """
    try:
        here_state: PowerState | None = get_driver(vm.host.uri).domain_info(str(vm.uuid)).state
    except NotFound:
        here_state = None
    if here_state is not None and here_state.is_active:
        return vm
    found, unreachable = _look_elsewhere(vm)
    if found and (found[0][1].is_active or here_state is None):
        host, state = found[0]
        how = "running" if state.is_active else "defined"
        return vm_moved(vm=vm, host=host, state=state, source=f"found {how} there at start")
    if here_state is None and unreachable:
        names = ", ".join(h.name for h in unreachable)
        raise Conflict(f"{vm.name}'s domain is missing on {vm.host.name} and host(s) {names} cannot be asked "
                       "whether it is there: it is not started, so that it never runs twice. Try again when "
                       "they are reachable.")
    return vm
