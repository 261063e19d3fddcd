"""Storage rules: pools on hosts, the image library, and VM disks as thin overlays on images."""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.db.models import ProtectedError, QuerySet

from cluster.choices import HostStatus
from cluster.hostconfig import storage_path_check
from cluster.models import Host
from portal.actors import Actor, is_admin, require_admin, require_user
from portal.audit import audit
from portal.choices import JobStatus, Via
from portal.exceptions import Conflict, NotFound, PermissionDenied, PortalError, ValidationFailed
from portal.hypervisor import get_driver
from portal.jobs import job_create
from portal.models import Job
from quotas.services import quota_reserve

from . import imageio
from .copies import Progress, image_copies_remove, image_copy_ensure
from .domains import allowed_root_check, pool_define_again
from .imports import gib_ceil, image_prepare_and_store
from .models import Image, ImageCopy, StoragePool, Volume
from .pools import image_volume_name, pool_ensure, pool_for_host
from .recipes import RECIPES
from .validation import IMAGE_NAME_RE, check_login_user

log = logging.getLogger(__name__)

GIB = 1024**3
IMAGE_BUILD = "image.build"  # the job kind (handler in storage.jobs)


def image_check_manage(*, actor: Actor, image: Image, verb: str) -> None:
    """Administrators manage every image; a user manages the images they own (never the library's)."""
    user = require_user(actor, f"Sign in to {verb} images.")
    if is_admin(user) or (image.owner_id is not None and image.owner_id == user.pk):
        return
    raise PermissionDenied(f"Only administrators and the image's owner may {verb} image {image.name}.")


def pools_ensure_on_host(*, host: Host) -> None:
    """The host's portal pools are defined again where they went missing (a fresh test driver, a
    pool undefined by hand); pools that exist are left as they are. A new host gets the default pool."""
    pools = list(StoragePool.objects.filter(host=host))
    if not pools:
        pool_ensure(host=host)
        return
    for pool in pools:
        try:
            if pool.kind == StoragePool.Kind.GLUSTERFS:  # a netfs pool: defined again as one (storage.domains)
                pool_define_again(pool)
                continue
            get_driver(host.uri).ensure_pool(pool.name, pool.path, only_if_missing=True)
        except PortalError as exc:
            log.warning("storage pool %s on %s: %s", pool.name, host.name, exc.detail or exc.message)


def pool_register(*, actor: Actor, via: str, host: Host, name: str) -> StoragePool:
    """List a libvirt pool that exists on the host already (made outside the portal) as a portal
    pool, as it is: nothing in libvirt changes. Registering a listed pool again returns it."""
    require_admin(actor, "Only administrators register storage pools.")
    existing = StoragePool.objects.filter(host=host, name=name).first()
    if existing is not None:
        return existing
    info = get_driver(host.uri).pool_info(name)
    with transaction.atomic():
        pool, created = StoragePool.objects.get_or_create(host=host, name=name, defaults={"path": info.path})
        if created:
            audit(actor=actor, via=via, action="pool.register", target=pool,
                  message=f"Listed the existing libvirt pool {name} ({info.type}, {info.path}) of host {host.name}")
    return pool


# --- pools an administrator adds and configures (admin, manage.py pool, host add --storage-dir) ---------------

POOL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _shared_path_check(*, pool_name: str, path: str, host: Host) -> None:
    """A shared pool is the same storage at the same path on every host: migration and HA re-point disks to the
    pool of that name *and path* on the other host, so a shared twin at another path is refused."""
    twin = (StoragePool.objects.filter(name=pool_name, shared=True).exclude(host=host).exclude(path=path)
            .select_related("host").first())
    if twin is not None:
        raise ValidationFailed(f"Pool {pool_name} is shared on host {twin.host.name} at {twin.path}: a shared pool "
                               f"has the same path on every host (mount the storage at {twin.path} here too).",
                               field="shared")


def pool_configure(*, actor: Actor, via: str, pool: StoragePool, shared: bool) -> StoragePool:
    """Mark a pool shared (the same storage on every host that has a pool of this name and path: NFS, GlusterFS;
    disks on it migrate without copying, HA restarts its VMs elsewhere) or host-local. Administrators only,
    audited `pool.configure`. The portal cannot tell a shared file system from a local one: this is the
    administrator's word."""
    require_admin(actor, "Only administrators configure storage pools.")
    shared = bool(shared)
    with transaction.atomic():
        locked = StoragePool.objects.select_for_update().select_related("host").get(pk=pool.pk)
        if not shared and locked.kind != StoragePool.Kind.DIR:  # storage domains (issue #11)
            raise ValidationFailed(f"Pool {locked.name} is a {locked.get_kind_display()} domain: the same storage on "
                                   "every host that has it, so it stays shared.", field="shared")
        if shared:
            _shared_path_check(pool_name=locked.name, path=locked.path, host=locked.host)
        before = locked.shared
        if before != shared:
            StoragePool.objects.filter(pk=locked.pk).update(shared=shared)
            locked.shared = shared
        audit(actor=actor, via=via, action="pool.configure", target=locked,
              message=f"Pool {locked.name} of host {locked.host.name} ({locked.path}): "
                      + ("shared" if shared else "host-local") + ("" if before != shared else " (no change)"),
              data={"shared": {"from": before, "to": shared}} if before != shared else {})
    pool.shared = shared
    return locked


def pool_add(*, actor: Actor, via: str, host: Host, name: str, path: str, shared: bool = False) -> StoragePool:
    """A new portal pool on a host: a libvirt dir pool `name` at `path` on that host (made and started there,
    pool_ensure), listed in the portal, optionally marked shared. Administrators only, audited `pool.add`.
    An existing libvirt pool of that name is taken only when it has that path."""
    require_admin(actor, "Only administrators add storage pools.")
    name = str(name or "").strip()
    if not POOL_NAME_RE.match(name):
        raise ValidationFailed("A pool name is 1 to 100 letters, digits, '.', '_' or '-', starting with a letter "
                               "or digit.", field="name")
    if name == settings.BACKUP_POOL:  # a data pool never takes the backup domain's name (storage.domains)
        raise ValidationFailed(f"{name} is the backup storage domain's name (PORTAL_BACKUP_POOL): add it as a "
                               "storage domain with --content backup.", field="name")
    path = storage_path_check(path)
    path = allowed_root_check(path)  # storage domains (issue #11): inside STORAGE_ALLOWED_ROOTS
    if StoragePool.objects.filter(host=host, name=name).exists():
        raise ValidationFailed(f"Host {host.name} has a pool named {name} already (change it with pool set).",
                               field="name")
    same_dir = StoragePool.objects.filter(host=host, path=path).first()
    if same_dir is not None:
        raise ValidationFailed(f"Pool {same_dir.name} of host {host.name} uses {path} already: two pools in one "
                               "directory would list each other's volumes.", field="path")
    if shared:
        _shared_path_check(pool_name=name, path=path, host=host)
    if host.status in HostStatus.UNREACHABLE:
        raise Conflict(f"Host {host.name} is {host.status}: a pool is made on a host that answers.")
    driver = get_driver(host.uri)
    try:
        info = driver.pool_info(name)
    except NotFound:
        info = None
    if info is not None and os.path.normpath(info.path) != path:
        raise ValidationFailed(f"Host {host.name} has a libvirt pool {name} at {info.path} already: choose another "
                               "name, or list that pool as it is.", field="name")
    pool = pool_ensure(host=host, name=name, path=path)
    with transaction.atomic():
        if shared:
            StoragePool.objects.filter(pk=pool.pk).update(shared=True)
            pool.shared = True
        audit(actor=actor, via=via, action="pool.add", target=pool,
              message=f"Pool {name} of host {host.name} at {path}" + (", shared" if shared else ""))
    return pool


def pool_storage_dir(*, host: Host, storage_dir: str | None) -> None:
    """`host add --storage-dir`: the host's portal pool is listed at that directory before the host is first
    read, so host_up makes it there instead of in STORAGE_DIR. A pool keeps its path: another one is refused."""
    if not storage_dir:
        return
    name = settings.STORAGE_POOL
    existing = StoragePool.objects.filter(host=host, name=name).first()
    if existing is None:
        StoragePool.objects.create(host=host, name=name, path=storage_dir)
    elif os.path.normpath(existing.path) != storage_dir:
        raise Conflict(f"Host {host.name}'s portal pool {name} is at {existing.path}: a pool keeps its path. Add "
                       "another pool instead (manage.py pool add).")


def volume_adopt(*, pool: StoragePool, name: str, path: str, fmt: str, capacity_bytes: int,
                 backing_image: Image | None = None) -> Volume:
    """The row of a volume that exists in libvirt already (a disk of an adopted domain); its caller
    owns the transaction and checks that no row names it yet."""
    return Volume.objects.create(pool=pool, name=name, path=path, format=fmt,
                                 capacity_gib=max(1, -(-capacity_bytes // GIB)), backing_image=backing_image)


def volume_forget(*, volume: Volume) -> None:
    """Drop a volume's row and leave the volume in libvirt as it is (a released VM keeps its disks)."""
    volume.delete()


def volume_owner(*, pool: StoragePool, name: str, path: str) -> str | None:
    """What in the portal uses a pool's volume already ("image debian-12", "a VM disk"), or None."""
    image = Image.objects.filter(pool=pool, volume_name=name).first() or Image.objects.filter(path=path).first()
    if image is not None:
        return f"image {image.name}"
    if Volume.objects.filter(pool=pool, name=name).exists() or (path and Volume.objects.filter(path=path).exists()):
        return "a disk the portal already manages"
    return None


def image_register(*, actor: Actor, via: str = Via.CLI, host: Host, name: str, title: str, source_path: str,
                   fmt: str | None = "qcow2", description: str = "", os_name: str = "",
                   boot_mode: str = Image.BootMode.DISK, kernel_path: str = "", initrd_path: str = "",
                   cmdline: str = "", ready_marker: str = "", min_disk_gib: int = 1,
                   cloud_init: bool = False, login_user: str = "",
                   is_default: bool = False, replace: bool = False) -> Image:
    """Copy an image file of the portal server into the host's pool and list it in the library, now
    (set-up, the image build): the import pipeline's checks, synchronously. The real format is
    detected and must be `fmt` (None: any); the file is probed with that explicit format (backing
    files, external data files, VMDK descriptors, corrupt or huge images refused) and stored as qcow2
    (an ISO as it is), with its sizes and the stored file's SHA-256.

    `cloud_init`: VMs made from it get a NoCloud seed; `login_user`: the user SSH logs in as."""
    require_admin(actor, "Only administrators add images.")
    if not IMAGE_NAME_RE.match(name or ""):
        raise ValidationFailed("Image name must be 2–60 lowercase letters, digits or hyphens.", field="name")
    check_login_user(login_user)
    if fmt and fmt not in imageio.FORMATS:
        raise ValidationFailed(f"Image format must be one of {', '.join(imageio.FORMATS)}.", field="format")
    if not os.path.isfile(source_path):
        raise ValidationFailed(f"No such image file: {source_path}", field="source_path")
    for path in (kernel_path, initrd_path):
        if path and not os.path.isfile(path):
            raise ValidationFailed(f"No such file: {path}", field="kernel_path")
    existing = Image.objects.filter(name=name).first()
    if existing and not replace:
        raise ValidationFailed(f"An image named {name!r} exists already.", field="name")
    if existing:
        if existing.volumes.exists():
            raise ValidationFailed(f"Image {name!r} is in use by VM disks and cannot be replaced.", field="name")
        get_driver(existing.pool.host.uri).delete_volume(pool=existing.pool.name, name=existing.volume_name)
        copies = list(existing.host_copies.select_related("pool__host"))
        existing.delete()
        image_copies_remove(copies=copies)
    pool = pool_ensure(host=host)
    disk, volume_name, volume_path = image_prepare_and_store(host=host, name=name, source_path=source_path,
                                                             declared=fmt)
    try:
        with transaction.atomic():
            if is_default:
                Image.objects.filter(is_default=True).update(is_default=False)
            image = Image.objects.create(
                name=name, kind=disk.kind, title=title, description=description, os_name=os_name, pool=pool,
                volume_name=volume_name, path=volume_path, format=disk.fmt, size_bytes=disk.virtual_size,
                actual_size_bytes=disk.actual_size, checksum_sha256=disk.sha256, source=source_path[:500],
                source_format=disk.source_format, boot_mode=boot_mode, kernel_path=kernel_path,
                initrd_path=initrd_path, cmdline=cmdline, ready_marker=ready_marker,
                min_disk_gib=max(min_disk_gib, gib_ceil(disk.virtual_size)),
                cloud_init=cloud_init, login_user=login_user, is_default=is_default,
            )
            audit(actor=actor, via=via, action="image.register", target=image,
                  message=f"Registered image {name} ({disk.source_format}, {disk.virtual_size} bytes virtual)")
    except BaseException:
        get_driver(host.uri).delete_volume(pool=pool.name, name=volume_name)
        raise
    return image


# --- templates and images made from volumes ---------------------------------------------------------

def image_new_check(*, actor: Actor, owner: User | None, name: str, title: str = "",
                    visibility: str = Image.Visibility.PRIVATE, groups: Iterable[Group | str] = ()) -> tuple[str, list[Group]]:
    """The checks for a new image of `owner` (None: the library, administrators only), made before any
    work starts: its name (format, not taken), title, visibility and groups (a user shares only with
    groups they belong to). Returns the title (the name when blank) and the groups."""
    user = require_user(actor, "Sign in to add images.")
    if owner is None and not is_admin(user):
        raise PermissionDenied("Only administrators add images to the library.")
    if not IMAGE_NAME_RE.match(name or ""):
        raise ValidationFailed("Image name must be 2–60 lowercase letters, digits or hyphens.", field="name")
    if Image.objects.filter(name=name).exists():
        raise ValidationFailed(f"An image named {name!r} exists already; choose another name.", field="name")
    title = (title or "").strip() or name
    if len(title) > 100:
        raise ValidationFailed("Title must be at most 100 characters.", field="title")
    if visibility not in Image.Visibility.values:
        raise ValidationFailed(f"Visibility must be one of {', '.join(Image.Visibility.values)}.", field="visibility")
    chosen: list[Group] = []
    for g in groups:
        group = g if isinstance(g, Group) else Group.objects.filter(name=str(g).strip()).first()
        if group is None:
            raise ValidationFailed(f"Unknown group {str(g)[:80]!r}.", field="groups")
        if not is_admin(user) and not user.groups.filter(pk=group.pk).exists():
            raise ValidationFailed(f"You are not a member of {group.name}.", field="groups")
        chosen.append(group)
    if visibility == Image.Visibility.GROUP and not chosen:
        raise ValidationFailed("Choose the groups that may use it, or another visibility.", field="groups")
    return title, chosen


def _gib(size_bytes: int) -> int:
    return max(1, -(-size_bytes // GIB))


def image_from_volume(*, actor: Actor, via: str, volume: Volume, name: str, title: str, owner: User | None,
                      kind: str = Image.Kind.TEMPLATE, description: str = "",
                      visibility: str = Image.Visibility.PRIVATE, groups: Iterable[Group] = (),
                      like: Image | None = None, default_vcpus: int | None = None,
                      default_memory_mib: int | None = None, min_disk_gib: int = 1, source: str = "",
                      volume_name: str | None = None) -> Image:
    """Act phase of sealing a disk into an image: copy `volume` (its backing chain flattened, so the new
    base needs no other image) into a new base volume in the portal's pool of its host, then list it (kind template by
    default) with the sizes, checksum and boot settings of `like` (the image the disk was made from).
    A user's image counts against their disk quota (checked again as the row is written). On any failure
    the copy is removed and no Image row is written. `volume_name`: the new base volume's name (a job
    passes one of its own, so a retry finds its copy and no other image's volume is ever touched)."""
    title, chosen = image_new_check(actor=actor, owner=owner, name=name, title=title, visibility=visibility,
                                    groups=groups)
    # Into the portal's pool of the disk's host, where VMs are made from images: an adopted VM's disk may
    # be in a pool of its own, and full copies are made only in their image's pool.
    pool = pool_for_host(volume.pool.host)
    driver = get_driver(pool.host.uri)
    volume_name = volume_name or image_volume_name(f"{name}-{secrets.token_hex(4)}")
    image_volume_discard(pool=pool, name=volume_name)  # a half-made copy of an earlier attempt
    info = driver.clone_volume(pool=pool.name, source=volume.name, name=volume_name, fmt="qcow2",
                               source_pool=volume.pool.name)
    try:
        checksum = driver.volume_checksum(pool=pool.name, name=volume_name) or ""
        with transaction.atomic():
            if owner is not None:
                quota_reserve(user=owner, vms=0, vcpus=0, memory_mib=0, disk_gib=_gib(info.capacity_bytes))
            if Image.objects.select_for_update().filter(name=name).exists():
                raise ValidationFailed(f"An image named {name!r} exists already; choose another name.", field="name")
            inherited = {f: getattr(like, f) for f in (
                "boot_mode", "kernel_path", "initrd_path", "cmdline", "cloud_init", "login_user", "ready_marker",
                "os_name")} if like is not None else {}
            image = Image.objects.create(
                name=name, kind=kind, title=title, description=description, pool=pool, volume_name=volume_name,
                path=info.path, format="qcow2", size_bytes=info.capacity_bytes,
                actual_size_bytes=info.allocation_bytes, checksum_sha256=checksum, source=source[:500],
                source_format=volume.format, min_disk_gib=max(min_disk_gib, _gib(info.capacity_bytes)),
                default_vcpus=default_vcpus, default_memory_mib=default_memory_mib, owner=owner,
                visibility=visibility, **inherited)
            if chosen:
                image.groups.set(chosen)
            whose = f" for {owner.get_username()}" if owner is not None else " in the library"
            audit(actor=actor, via=via, action="image.create", target=image,
                  message=f"Made {kind} {name}{whose} from disk {volume.name} ({info.capacity_bytes} bytes, "
                          f"{info.allocation_bytes} stored)",
                  data={"source": source, "size_bytes": info.capacity_bytes, "checksum_sha256": checksum})
    except BaseException:
        driver.delete_volume(pool=pool.name, name=volume_name)
        raise
    return image


def image_volume_discard(*, pool: StoragePool, name: str) -> None:
    """Remove a base volume that no image lists (the half-made copy of a failed template job)."""
    if Image.objects.filter(pool=pool, volume_name=name).exists():
        return
    try:
        get_driver(pool.host.uri).delete_volume(pool=pool.name, name=name)
    except NotFound:
        pass


def volume_plan(*, pool: StoragePool, name: str, capacity_gib: int, backing_image: Image | None,
                fmt: str = "qcow2", copy_of: Image | None = None) -> Volume:
    """The row of a new disk, written in a record phase before anything exists in libvirt
    (volume_materialize creates a qcow2 one idempotently in the job; volume_write fills a raw one).
    `backing_image`: a thin overlay on that image; `copy_of`: a full, standalone copy of it. On a host
    other than the image's, both are made from the image's copy on that host (storage.copies)."""
    if backing_image is not None and copy_of is not None:
        raise ValueError("a volume is either a thin overlay or a full copy of an image, not both")
    return Volume.objects.create(pool=pool, name=name, format=fmt, capacity_gib=capacity_gib,
                                 backing_image=backing_image, copy_of=copy_of)


def volume_materialize(*, volume: Volume, progress: Progress | None = None) -> Volume:
    """Create the volume in libvirt (idempotent): a thin qcow2 overlay on the image's base volume, or,
    for a full copy, a standalone copy of it (backing chain flattened) grown to the volume's size. On a
    host other than the image's, the base is the image's copy on that host, made first if needed
    (image_copy_ensure; `progress(copied, total)` while it copies).

    The row's `path` is written only once the volume is complete, and is what says so: libvirt lists a
    volume as soon as a copy starts (and goes on copying if the worker dies), so a volume in libvirt
    while the row has no path is what an interrupted attempt left. It is deleted and made again, never
    used (a retried create job must not define and boot a half-copied disk)."""
    driver = get_driver(volume.pool.host.uri)
    pool = volume.pool.name
    if volume.path:
        try:
            info = driver.volume_info(pool=pool, name=volume.name)
        except NotFound:
            pass  # recorded as made, but gone from libvirt: made again below
        else:
            if volume.path != info.path:
                Volume.objects.filter(pk=volume.pk).update(path=info.path)
                volume.path = info.path
            return volume
    else:
        # What an interrupted attempt left, if anything. Looked up first, by name: deleting a missing volume
        # refreshes the pool, which libvirt refuses while another volume of it is being built (concurrent
        # creates on one host would fail).
        try:
            driver.volume_info(pool=pool, name=volume.name)
        except NotFound:
            pass
        else:
            driver.delete_volume(pool=pool, name=volume.name)
    host = volume.pool.host
    if volume.copy_of_id is not None:
        source = image_copy_ensure(image=Image.objects.select_related("pool__host").get(pk=volume.copy_of_id),
                                   host=host, progress=progress)
        info = driver.clone_volume(pool=pool, source=source.volume_name, name=volume.name,
                                   capacity_bytes=volume.capacity_gib * GIB, fmt="qcow2",
                                   source_pool=source.pool.name)
    else:
        image = volume.backing_image
        base = image_copy_ensure(image=image, host=host, progress=progress) if image is not None else None
        info = driver.create_volume(
            pool=pool, name=volume.name, capacity_bytes=volume.capacity_gib * GIB, fmt="qcow2",
            backing_path=base.path if base is not None else None,
            backing_format=image.format if image else "qcow2")
    Volume.objects.filter(pk=volume.pk).update(path=info.path)  # complete: from now on it is used as it is
    volume.path = info.path
    return volume


def volume_write(*, volume: Volume, data: bytes) -> Volume:
    """Fill a raw volume with `data` (a cloud-init seed), replacing what it held; streamed through
    libvirt, so it works on any host."""
    info = get_driver(volume.pool.host.uri).upload_bytes(pool=volume.pool.name, name=volume.name, data=data,
                                                         fmt=volume.format)
    if volume.path != info.path:
        Volume.objects.filter(pk=volume.pk).update(path=info.path)
        volume.path = info.path
    return volume


def volume_destroy(*, volume: Volume) -> None:
    """Delete the disk in libvirt (a missing volume or pool is fine) and its row."""
    try:
        get_driver(volume.pool.host.uri).delete_volume(pool=volume.pool.name, name=volume.name)
    except NotFound:
        pass
    volume.delete()


def _names(values: Iterable[object], limit: int = 10) -> str:
    names = sorted({str(v) for v in values if v})
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


_VM_FIELDS = ("name", "owner_id", "group_id")
# Who uses an image: a VM's (name, owner id, group id), or (None, None, None, disk name) for a disk
# without a VM (a create that failed half-way).
_User = tuple[str | None, int | None, int | None, str | None]


def _users_of(*, image: Image) -> dict[str, list[_User]]:
    """The VMs that keep `image` from being deleted, per reason (storage reaches them only through
    reverse relations: it does not import vms): in a CD-ROM drive, thin clones (disks backed by its base
    volume), full copies still being made, and VMs that boot its kernel. Finished full copies need
    nothing."""
    def vms(qs: QuerySet[Any], prefix: str = "") -> list[_User]:
        return sorted({(*row, None) for row in qs.values_list(*(prefix + f for f in _VM_FIELDS))},
                      key=lambda r: (r[0] is None, r[0] or ""))

    thin = image.volumes.all()
    out = {
        "drives": vms(image.cdrom_vms.filter(deleted_at__isnull=True)),
        "thin": [u for u in vms(thin, "attachments__vm__") if u[0] is not None],
        "copying": [u for u in vms(image.copies.filter(path=""), "attachments__vm__") if u[0] is not None],
        "kernel": [],
    }
    if image.boot_mode == Image.BootMode.KERNEL:  # its kernel and initrd stay what those VMs boot
        out["kernel"] = vms(image.vms.filter(deleted_at__isnull=True))
    out["thin"] += [(None, None, None, n) for n in thin.filter(attachments__isnull=True).values_list("name", flat=True)]
    return out


def _named_for(viewer: User | None, users: list[_User]) -> tuple[list[str], str]:
    """The VMs `viewer` may see by name (administrators and the system, None: all; a user: their own and
    their groups'), and the text naming them with the others only counted ("web-1 and 2 VMs of other
    users")."""
    admin = viewer is None or is_admin(viewer)
    mine = set() if viewer is None or admin else set(viewer.groups.values_list("pk", flat=True))
    shown: list[str] = []
    disks: list[str] = []
    hidden = orphans = 0
    for name, owner_id, group_id, disk in users:
        if name is None:
            if admin:
                disks.append(f"disk {disk}")
            else:
                orphans += 1
        elif admin or (viewer is not None and owner_id == viewer.pk) or (group_id is not None and group_id in mine):
            shown.append(name)
        else:
            hidden += 1
    parts = [_names(shown + disks)] if shown or disks else []
    if hidden:
        parts.append(f"{hidden} VM{'s' if hidden != 1 else ''} of other users")
    if orphans:
        parts.append(f"{orphans} disk{'s' if orphans != 1 else ''} of VMs not finished being created")
    return shown, " and ".join(parts)


def image_dependents(*, image: Image) -> dict[str, list[str]]:
    """What keeps an image from being deleted (for administrators), by the names of the VMs: thin
    clones (disks without a VM by their volume's name), full copies still being made, and VMs that boot
    its kernel (an ISO in CD-ROM drives is refused separately)."""
    users = _users_of(image=image)
    return {key: [u[0] or f"disk {u[3]}" for u in users[key]] for key in ("thin", "copying", "kernel")}


def _refuse_while_used(*, viewer: User | None, image: Image) -> None:
    """Conflict naming what keeps `image` (as read now) from being deleted, or nothing."""
    users = _users_of(image=image)
    if users["drives"]:
        shown, text = _named_for(viewer, users["drives"])
        raise Conflict(f"Image {image.name} is in the CD-ROM drive of {len(users['drives'])} VM(s): {text}; "
                       "eject it there first.", image=image.name, vms=shown)
    parts = []
    shown_all: set[str] = set()
    for key, label in (("thin", "thin clones"), ("copying", "full copies being made"),
                       ("kernel", "VMs booting its kernel")):
        if users[key]:
            shown, text = _named_for(viewer, users[key])
            shown_all.update(shown)
            parts.append(f"{label}: {text}")
    if parts:
        raise Conflict(f"Image {image.name} is in use ({'; '.join(parts)}); delete those VMs first.",
                       image=image.name, vms=sorted(shown_all))


def _remove_base_volume(*, uri: str, pool: str, name: str, image_name: str) -> None:
    """After the image's row is gone: its base volume (a failure is logged: the row is gone already,
    and a volume no image lists harms nothing but space)."""
    try:
        get_driver(uri).delete_volume(pool=pool, name=name)
    except Exception:
        log.exception("image %s deleted, but its base volume %s in pool %s could not be removed", image_name,
                      name, pool)


def image_delete(*, actor: Actor, via: str, image: Image) -> None:
    """Remove an image from the library and its base volume from libvirt, with its copies on other hosts
    (storage.copies: VMs there built on a copy depend on the image as on the original); refused while VMs depend on it
    (an ISO in their CD-ROM drive, thin clones, full copies being made, VMs booting its kernel), naming
    them (a user is told the names of their own and their groups' VMs only; the rest are counted).
    Full copies made already do not depend on it. Administrators delete any image, users their own.

    Check and delete happen in one transaction with the image's row locked: a VM create, CD-ROM insert
    or full copy recorded meanwhile either waits for it (and then finds the image gone) or is seen by
    the check. The base volume is removed once that transaction has committed."""
    with transaction.atomic():
        locked = (Image.objects.select_for_update(of=("self",)).select_related("pool__host")
                  .filter(pk=image.pk).first())
        if locked is None:
            raise NotFound(f"Image {image.name} no longer exists.")
        image = locked
        viewer = None
        if actor is not None:  # None: the import pipeline removing what it wrote
            image_check_manage(actor=actor, image=image, verb="delete")
            viewer = require_user(actor)
        _refuse_while_used(viewer=viewer, image=image)
        # Its copies on other hosts go with it (their rows by cascade, their volumes after the commit).
        copies: list[ImageCopy] = list(image.host_copies.select_related("pool__host"))
        on_hosts = f" and its copies on {_names(c.pool.host.name for c in copies)}" if copies else ""
        audit(actor=actor, via=via, action="image.delete", target=image,
              message=f"Deleted image {image.name} and its base volume {image.volume_name}{on_hosts}")
        remove = {"uri": image.pool.host.uri, "pool": image.pool.name, "name": image.volume_name,
                  "image_name": image.name}
        try:
            image.delete()
        except ProtectedError:  # a use the checks above do not know of: refused, nothing removed
            raise Conflict(f"Image {image.name} is still in use; delete what uses it first.",
                           image=image.name) from None
        transaction.on_commit(lambda: _remove_base_volume(**remove))
        if copies:
            transaction.on_commit(lambda: image_copies_remove(copies=copies))


def image_update(*, actor: Actor, via: str, image: Image, title: str | None = None, description: str | None = None,
                 os_name: str | None = None, visibility: str | None = None,
                 groups: Iterable[Group] | None = None,
                 is_default: bool | None = None, cloud_init: bool | None = None,
                 login_user: str | None = None) -> Image:
    """Change how an image is presented (title, description, OS, visibility, default) and what its guest
    expects (a cloud-init seed, the SSH login user); one default at most."""
    user = require_user(actor, "Sign in to change images.")
    image_check_manage(actor=user, image=image, verb="change")
    wanted = {"title": title, "description": description, "os_name": os_name, "visibility": visibility,
              "is_default": is_default, "cloud_init": cloud_init, "login_user": login_user}
    if title is not None and not title.strip():
        raise ValidationFailed("Title is required.", field="title")
    if login_user is not None:
        check_login_user(login_user)
    if visibility is not None and visibility not in Image.Visibility.values:
        raise ValidationFailed(f"Visibility must be one of {', '.join(Image.Visibility.values)}.", field="visibility")
    if is_default and not is_admin(actor):
        raise PermissionDenied("Only administrators choose the default image.")
    with transaction.atomic():
        image = Image.objects.select_for_update().get(pk=image.pk)
        changes = {f: (getattr(image, f), v) for f, v in wanted.items() if v is not None and v != getattr(image, f)}
        if groups is not None:
            new_groups = sorted({g.pk: g for g in groups}.values(), key=lambda g: g.name)
            old_groups = sorted(image.groups.all(), key=lambda g: g.name)
            if [g.pk for g in new_groups] != [g.pk for g in old_groups]:
                if not is_admin(actor):
                    mine = set(user.groups.values_list("pk", flat=True))
                    foreign = [g.name for g in new_groups if g.pk not in mine]
                    if foreign:
                        raise ValidationFailed(f"You are not a member of {', '.join(foreign)}.", field="groups")
                image.groups.set(new_groups)
                changes["groups"] = (", ".join(g.name for g in old_groups), ", ".join(g.name for g in new_groups))
        if not changes:
            return image
        if changes.get("is_default", (None, False))[1]:
            Image.objects.filter(is_default=True).exclude(pk=image.pk).update(is_default=False)
        for field, (_old, new) in changes.items():
            if field != "groups":  # set above (a many-to-many: no attribute to assign)
                setattr(image, field, new)
        image.save(update_fields=[f for f in changes if f != "groups"] or None)
        audit(actor=actor, via=via, action="image.update", target=image,
              message="; ".join(f"{f}: {old!r} → {new!r}" for f, (old, new) in changes.items()))
    return image


def image_build(*, actor: Actor, via: str, recipe: str = "debian-12", host: Host | None = None) -> Job:
    """Queue the build of a recipe's image (storage.recipes) and its registration on `host` (else the
    first enabled host, reachable ones first): an `image.build` job. One image build at a time: the
    build takes minutes of CPU and disk, and a second one is refused while one is queued or running.
    Building an image that is registered already is a job with nothing to do."""
    require_admin(actor, "Only administrators build images.")
    if recipe not in RECIPES:
        raise ValidationFailed(f"No image recipe {recipe[:60]!r}; known: {', '.join(sorted(RECIPES))}.",
                               field="recipe")
    if host is None:
        host = (Host.objects.filter(enabled=True, status=HostStatus.UP).first()
                or Host.objects.filter(enabled=True).first())
        if host is None:
            raise Conflict("There is no enabled host to register the image on; add or enable a host first.")
    with transaction.atomic():
        # The host row's lock makes two concurrent requests for it take turns (PostgreSQL), so the
        # second sees the first one's job. (Builds for two hosts at once would both run: the script
        # then lets one wait for the other's lock and finds the image built.)
        Host.objects.select_for_update().filter(pk=host.pk).first()
        running = Job.objects.filter(kind=IMAGE_BUILD, status__in=JobStatus.ACTIVE).order_by("created_at").first()
        if running is not None:
            raise Conflict(f"An image build is already {running.get_status_display().lower()} "
                           f"(job {running.pk}); wait for it to finish.", job=str(running.pk))
        job = job_create(kind=IMAGE_BUILD, actor=actor, via=via, target=host,
                         params={"recipe": recipe, "host_id": host.pk})
        audit(actor=actor, via=via, action=IMAGE_BUILD, target=host, job=job,
              message=f"Queued the build of image {recipe} for host {host.name}")
    return job
