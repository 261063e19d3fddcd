"""Storage domains: libvirt pools of one name on one or more hosts, seen as one place for disks or backups.

Kinds (StoragePool.Kind):
- `dir`: a local directory of each host that has it (a libvirt dir pool);
- `shared`: a directory every host mounts at the same path (NFS in production): a dir pool, marked shared,
  so disks on it migrate without copying and HA restarts its VMs elsewhere;
- `glusterfs`: a GlusterFS volume libvirt mounts over FUSE at the pool's path (a `netfs` pool with format
  glusterfs), shared by every host that has it.

Content (StoragePool.Content): `data` (images and VM disks) or `backup` (backups only; never VM disks).
Every rule is here: administrators only, paths inside STORAGE_ALLOWED_ROOTS, the same kind/content (and for
shared kinds the same path and source) on every host, a volume that cannot be mounted refused with nothing
left defined, removal refused while anything uses the domain. Capacity and use are refreshed on demand and
by the monitor's housekeeping (domains_refresh_due).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from cluster.choices import HostStatus
from cluster.hostconfig import storage_path_check
from cluster.models import Host
from portal.actors import Actor, is_admin, require_admin
from portal.audit import audit
from portal.exceptions import Conflict, NotFound, PortalError, ValidationFailed
from portal.hypervisor import get_driver
from portal.hypervisor.types import PoolSpec, PoolUsage

from .models import Image, ImageCopy, StoragePool, Volume
from .usage import registered_pool_users

log = logging.getLogger(__name__)

DOMAIN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$")
GLUSTER_VOLUME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
Kind = StoragePool.Kind
Content = StoragePool.Content


# --- validation -----------------------------------------------------------------------------------------

def allowed_root_check(path: object, *, field: str = "path") -> str:
    """A storage domain's directory: absolute, normalised (cluster.hostconfig.storage_path_check) and inside
    one of STORAGE_ALLOWED_ROOTS. Returned normalised."""
    norm = storage_path_check(path, field=field)
    roots = [os.path.normpath(r) for r in settings.STORAGE_ALLOWED_ROOTS if r and os.path.isabs(r)]
    for root in roots:
        if norm == root or norm.startswith(root.rstrip("/") + "/"):
            return norm
    raise ValidationFailed(f"A storage domain lives inside {', '.join(roots) or '(no directory allowed)'} "
                           "(PORTAL_STORAGE_ALLOWED_ROOTS); choose a directory there.", field=field)


def _spec(*, name: str, kind: str, path: str, source_host: str, source_name: str) -> PoolSpec:
    if kind == Kind.GLUSTERFS:
        return PoolSpec(name=name, path=path, type="netfs", source_host=source_host, source_dir=f"/{source_name}",
                        source_format="glusterfs")
    return PoolSpec(name=name, path=path)


# --- what a domain is, across hosts ---------------------------------------------------------------------

@dataclass
class StorageDomain:
    """The pools of one name: which hosts see it, and its capacity and use. A shared domain is one storage
    (its figures are one pool's: the largest report); local directories add up."""

    name: str
    kind: str
    content: str
    shared: bool
    pools: list[StoragePool] = field(default_factory=list)
    capacity_bytes: int = 0
    allocation_bytes: int = 0
    available_bytes: int = 0

    @property
    def hosts(self) -> list[Host]:
        return [p.host for p in self.pools]

    @property
    def active(self) -> bool:
        return all(p.active for p in self.pools)

    @property
    def errors(self) -> list[str]:
        return [f"{p.host.name}: {p.last_error}" for p in self.pools if p.last_error]

    @property
    def refreshed_at(self) -> Any:
        times = [p.refreshed_at for p in self.pools if p.refreshed_at]
        return min(times) if times else None

    @property
    def used_percent(self) -> int:
        return round(100 * self.allocation_bytes / self.capacity_bytes) if self.capacity_bytes else 0


def _group(pools: list[StoragePool]) -> list[StorageDomain]:
    out: dict[str, StorageDomain] = {}
    for pool in pools:
        domain = out.get(pool.name)
        if domain is None:
            domain = out[pool.name] = StorageDomain(name=pool.name, kind=pool.kind, content=pool.content,
                                                    shared=pool.shared or pool.kind != Kind.DIR)
        domain.pools.append(pool)
    for domain in out.values():
        if domain.shared:
            best = max(domain.pools, key=lambda p: p.capacity_bytes)
            domain.capacity_bytes, domain.allocation_bytes = best.capacity_bytes, best.allocation_bytes
            domain.available_bytes = best.available_bytes
        else:
            domain.capacity_bytes = sum(p.capacity_bytes for p in domain.pools)
            domain.allocation_bytes = sum(p.allocation_bytes for p in domain.pools)
            domain.available_bytes = sum(p.available_bytes for p in domain.pools)
    return list(out.values())


def domain_list(*, content: str | None = None) -> list[StorageDomain]:
    """Every storage domain (optionally of one content), by name, with its hosts."""
    pools = StoragePool.objects.select_related("host").order_by("name", "host__name")
    if content:
        pools = pools.filter(content=content)
    return _group(list(pools))


def domain_get(name: str) -> StorageDomain:
    pools = list(StoragePool.objects.select_related("host").filter(name=str(name)[:100]).order_by("host__name"))
    if not pools:
        raise NotFound(f"There is no storage domain {str(name)[:100]!r}.")
    return _group(pools)[0]


def domain_host_ids(name: str, *, field: str = "storage_domain") -> tuple[frozenset[int], str]:
    """The hosts that see data domain `name` (where VM disks on it can be built), and the phrase a
    placement refusal uses. An unknown domain or a backup domain: ValidationFailed on `field`."""
    pools = list(StoragePool.objects.filter(name=str(name)[:100]).values_list("host_id", "content", "active"))
    if not pools:
        raise ValidationFailed(f"There is no storage domain {str(name)[:100]!r}.", field=field)
    if any(content != Content.DATA for _h, content, _a in pools):
        raise ValidationFailed(f"Storage domain {name} holds backups, not VM disks.", field=field)
    return frozenset(h for h, _c, active in pools if active), f"sees the storage domain {name}"


# --- add ------------------------------------------------------------------------------------------------

def _check_twins(*, name: str, kind: str, content: str, path: str, source_host: str, source_name: str) -> None:
    """A domain is one thing on every host: the same kind and content; a shared one the same path and source."""
    twin = StoragePool.objects.filter(name=name).select_related("host").first()
    if twin is None:
        return
    if twin.kind != kind or twin.content != content:
        raise ValidationFailed(f"Storage domain {name} is a {twin.kind} domain for {twin.content} on host "
                               f"{twin.host.name}: add it to more hosts with the same kind and content.", field="kind")
    if kind != Kind.DIR and os.path.normpath(twin.path) != path:
        raise ValidationFailed(f"Storage domain {name} is at {twin.path} on host {twin.host.name}: a shared domain "
                               "has the same path on every host.", field="path")
    if kind == Kind.GLUSTERFS and (twin.source_host, twin.source_name) != (source_host, source_name):
        raise ValidationFailed(f"Storage domain {name} is GlusterFS volume {twin.source_host}:/{twin.source_name}: "
                               "every host mounts the same volume.", field="source_name")


def _undo(defined: list[tuple[Host, str]]) -> None:
    for host, name in defined:
        try:
            get_driver(host.uri).remove_pool(name)
        except PortalError as exc:
            log.warning("removing pool %s from %s after a failed add: %s", name, host.name, exc.detail or exc)


def domain_add(*, actor: Actor, via: str, name: str, kind: str, hosts: list[Host], path: str = "",
               content: str = Content.DATA, source_host: str = "", source_name: str = "") -> list[StoragePool]:
    """Add storage domain `name` to `hosts` (made and started in libvirt on each, then listed). Administrators
    only, audited `pool.add`. All or nothing: a host where the pool does not start (a GlusterFS volume that is
    down or unknown) undoes the pools this call made on the others, and no row is written."""
    require_admin(actor, "Only administrators add storage domains.")
    name = str(name or "").strip()
    if not DOMAIN_NAME_RE.match(name):
        raise ValidationFailed("A storage domain's name is 1 to 100 letters, digits, '.', '_' or '-', starting "
                               "with a letter or digit.", field="name")
    if kind not in Kind.values:
        raise ValidationFailed(f"Kind must be one of {', '.join(Kind.values)}.", field="kind")
    if content not in Content.values:
        raise ValidationFailed(f"Content must be one of {', '.join(Content.values)}.", field="content")
    if name == settings.BACKUP_POOL and content != Content.BACKUP:
        # Backups go to the domain of this name on the VM's host (backups.pools): never among VM disks.
        raise ValidationFailed(f"{name} is the backup storage domain's name (PORTAL_BACKUP_POOL): add it with "
                               "content backup, or give a data domain another name.", field="content")
    source_host, source_name = str(source_host or "").strip(), str(source_name or "").strip().lstrip("/")
    if kind == Kind.GLUSTERFS:
        if not HOSTNAME_RE.match(source_host):
            raise ValidationFailed("Give the GlusterFS server's host name (e.g. gluster1.example.org).",
                                   field="source_host")
        if not GLUSTER_VOLUME_RE.match(source_name):
            raise ValidationFailed("Give the GlusterFS volume's name: letters, digits, '_', '.', '-'.",
                                   field="source_name")
        path = path or os.path.join(settings.STORAGE_MOUNT_DIR, name)
    elif source_host or source_name:
        raise ValidationFailed("A server and volume are for GlusterFS domains only.", field="source_host")
    path = allowed_root_check(path)
    unique = list({h.pk: h for h in hosts}.values())
    if not unique:
        raise ValidationFailed("Choose at least one host.", field="hosts")
    _check_twins(name=name, kind=kind, content=content, path=path, source_host=source_host, source_name=source_name)
    for host in unique:
        if StoragePool.objects.filter(host=host, name=name).exists():
            raise ValidationFailed(f"Host {host.name} has storage domain {name} already.", field="name")
        same_dir = StoragePool.objects.filter(host=host, path=path).first()
        if same_dir is not None:
            raise ValidationFailed(f"Pool {same_dir.name} of host {host.name} uses {path} already: two pools in one "
                                   "directory would list each other's volumes.", field="path")
        if host.status in HostStatus.UNREACHABLE:
            raise Conflict(f"Host {host.name} is {host.status}: a storage domain is added on hosts that answer.")
    spec = _spec(name=name, kind=kind, path=path, source_host=source_host, source_name=source_name)
    defined: list[tuple[Host, str]] = []
    usage: dict[int, PoolUsage] = {}
    for host in unique:
        existed = False
        try:
            driver = get_driver(host.uri)
            try:
                driver.pool_info(name)
                existed = True
            except NotFound:
                pass
            usage[host.pk] = driver.define_pool(spec)
        except PortalError as exc:
            _undo(defined)
            if existed:
                raise ValidationFailed(f"Host {host.name} has a libvirt pool {name} of another kind or path already: "
                                       "choose another name.", field="name") from exc
            if kind == Kind.GLUSTERFS:
                error = ValidationFailed(
                    f"GlusterFS volume {source_name} on {source_host} could not be mounted on host {host.name}: "
                    "is the volume created and started, and does the host reach the server? Nothing was added.",
                    field="source_name")
                error.detail = exc.detail or exc.message
                raise error from exc
            raise
        if not existed:
            defined.append((host, name))
    now = timezone.now()
    try:
        with transaction.atomic():
            pools = [StoragePool.objects.create(
                host=host, name=name, path=path, kind=kind, content=content, shared=kind != Kind.DIR,
                source_host=source_host, source_name=source_name, capacity_bytes=usage[host.pk].capacity_bytes,
                allocation_bytes=usage[host.pk].allocation_bytes, available_bytes=usage[host.pk].available_bytes,
                active=usage[host.pk].active, refreshed_at=now) for host in unique]
            where = f"GlusterFS volume {source_host}:/{source_name} at {path}" if kind == Kind.GLUSTERFS else path
            audit(actor=actor, via=via, action="pool.add", target=pools[0],
                  message=f"Storage domain {name} ({kind}, {content}) on {', '.join(h.name for h in unique)}: {where}",
                  data={"kind": kind, "content": content, "hosts": [h.name for h in unique]})
    except IntegrityError:  # a twin request listed it meanwhile
        _undo(defined)
        raise ValidationFailed(f"Storage domain {name} was added meanwhile.", field="name") from None
    return pools


def pool_define_again(pool: StoragePool) -> None:
    """A listed pool gone from libvirt (a fresh test driver, undefined by hand) is defined and started again
    as its kind says; one that exists is left as it is (an administrator may have stopped it)."""
    driver = get_driver(pool.host.uri)
    try:
        driver.pool_info(pool.name)
    except NotFound:
        driver.define_pool(_spec(name=pool.name, kind=pool.kind, path=pool.path, source_host=pool.source_host,
                                 source_name=pool.source_name))


# --- capacity and use -------------------------------------------------------------------------------------

def pool_refresh(pool: StoragePool) -> StoragePool:
    """Read one pool's capacity, allocation and free space from libvirt (a pool that is missing or not running
    is recorded inactive, with why)."""
    try:
        usage = get_driver(pool.host.uri).pool_usage(pool.name)
    except PortalError as exc:
        values: dict[str, Any] = {"active": False, "last_error": (exc.detail or exc.message)[:500]}
    else:
        values = {"active": usage.active, "capacity_bytes": usage.capacity_bytes,
                  "allocation_bytes": usage.allocation_bytes, "available_bytes": usage.available_bytes,
                  "last_error": "" if usage.active else "The pool is not running in libvirt."}
    values["refreshed_at"] = timezone.now()
    StoragePool.objects.filter(pk=pool.pk).update(**values)
    for key, value in values.items():
        setattr(pool, key, value)
    return pool


def domain_refresh(*, actor: Actor, via: str, name: str | None = None) -> list[StorageDomain]:
    """Refresh the capacity and use of domain `name` (None: all) on every host that answers. Administrators."""
    require_admin(actor, "Only administrators refresh storage domains.")
    pools = StoragePool.objects.select_related("host").exclude(host__status__in=HostStatus.UNREACHABLE)
    if name:
        domain_get(name)
        pools = pools.filter(name=name)
    for pool in pools:
        pool_refresh(pool)
    return [domain_get(name)] if name else domain_list()


def domains_refresh_due() -> int:
    """Housekeeping (the monitor's turn): refresh pools not refreshed for STORAGE_REFRESH_SECONDS on hosts that
    answer. Returns how many were refreshed."""
    due = timezone.now() - timedelta(seconds=settings.STORAGE_REFRESH_SECONDS)
    pools = (StoragePool.objects.select_related("host").exclude(host__status__in=HostStatus.UNREACHABLE)
             .filter(Q(refreshed_at__isnull=True) | Q(refreshed_at__lt=due)))
    count = 0
    for pool in pools:
        pool_refresh(pool)
        count += 1
    return count


# --- remove ----------------------------------------------------------------------------------------------

def pool_users(pool: StoragePool) -> list[str]:
    """What uses a pool: images stored there, volumes (VM disks, data disks), image copies, and what the
    apps above storage register (storage.usage: backups)."""
    out: list[str] = []
    images = list(Image.objects.filter(pool=pool).values_list("name", flat=True)[:5])
    if images:
        out.append(f"image{'s' if len(images) > 1 else ''} {', '.join(images)}")
    volumes = Volume.objects.filter(pool=pool).count()
    if volumes:
        out.append(f"{volumes} disk{'s' if volumes > 1 else ''}")
    copies = ImageCopy.objects.filter(pool=pool).count()
    if copies:
        out.append(f"{copies} image cop{'ies' if copies > 1 else 'y'}")
    out.extend(registered_pool_users(pool))
    return out


def domain_remove(*, actor: Actor, via: str, name: str, host: Host | None = None) -> int:
    """Remove storage domain `name` from `host` (None: from every host): its pools are stopped (unmounted) and
    undefined in libvirt, their files left as they are. Refused while anything uses it there, and for the
    portal's own pool (STORAGE_POOL). Administrators only, audited `pool.remove`. Returns pools removed."""
    require_admin(actor, "Only administrators remove storage domains.")
    if name == settings.STORAGE_POOL:
        raise Conflict(f"{name} is the portal's own pool on every host (images and disks go there by default); "
                       "it is not removed.")
    removed: list[str] = []
    failed: PortalError | None = None
    with transaction.atomic():
        pools = StoragePool.objects.select_for_update().filter(name=str(name)[:100])
        if host is not None:
            pools = pools.filter(host=host)
        locked = list(pools.select_related("host").order_by("pk"))
        if not locked:
            where = f" on host {host.name}" if host is not None else ""
            raise NotFound(f"There is no storage domain {str(name)[:100]!r}{where}.")
        for pool in locked:
            users = pool_users(pool)
            if users:
                raise Conflict(f"Storage domain {name} is in use on host {pool.host.name}: {'; '.join(users)}. "
                               "Move or delete them first.")
        for pool in locked:
            try:
                get_driver(pool.host.uri).remove_pool(pool.name)
            except PortalError as exc:  # what was removed stays removed; this host keeps its pool
                failed = exc
                break
            removed.append(pool.host.name)
            pool.delete()
        if not removed:
            raise failed or Conflict(f"Storage domain {name} could not be removed.")
        audit(actor=actor, via=via, action="pool.remove", target_type="storagepool", target_name=name,
              message=f"Removed storage domain {name} from {', '.join(removed)}",
              data={"hosts": removed})
    if failed is not None:
        raise Conflict(f"Storage domain {name} was removed from {', '.join(removed)} but not from the other hosts: "
                       f"{failed.message}", detail=failed.detail)
    return len(removed)


def domain_visible_to(user: Actor) -> list[StorageDomain]:
    """The domains `user` may know of: all for administrators, data domains for everyone else."""
    return domain_list() if is_admin(user) else domain_list(content=Content.DATA)
