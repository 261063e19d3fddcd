"""The portal's pool on a host and the names of image volumes in it (used by the storage services and
the import pipeline alike)."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from django.conf import settings

from cluster.models import Host
from portal.exceptions import Conflict, ValidationFailed
from portal.hypervisor import get_driver

from .models import StoragePool


def uri_is_this_machine(uri: str) -> bool:
    """Whether a libvirt URI names a daemon of this machine, whose file system is ours: a local URI
    (qemu:///system) or a local UNIX socket (qemu+unix:///system?socket=...), no host name in it."""
    parts = urlsplit(uri)
    transport = parts.scheme.partition("+")[2]
    return transport in ("", "unix") and not parts.hostname


def pool_ensure(*, host: Host, name: str | None = None, path: str | None = None) -> StoragePool:
    """The host's portal pool, defined and started in libvirt if needed. Its path: the one given, else
    the one the portal has listed for it already (a host registered with a pool path of its own keeps
    it), else STORAGE_DIR. The directory is made here only on this machine; on another host libvirt
    builds it (the pool's build), since this machine's file system is not that host's."""
    name = name or settings.STORAGE_POOL
    if not path:
        listed = StoragePool.objects.filter(host=host, name=name).values_list("path", flat=True).first()
        path = listed or settings.STORAGE_DIR
    driver = get_driver(host.uri)
    if driver.capabilities().storage_files and uri_is_this_machine(host.uri):
        os.makedirs(path, exist_ok=True)
    driver.ensure_pool(name, path)
    pool, _ = StoragePool.objects.get_or_create(host=host, name=name, defaults={"path": path})
    return pool


def pool_for_host(host: Host, name: str | None = None) -> StoragePool:
    """The data pool named `name` on a host (a storage domain the host sees), else the host's portal pool
    (created when the host was registered)."""
    pools = StoragePool.objects.filter(host=host, content=StoragePool.Content.DATA)
    if name:
        named = pools.filter(name=name).first()
        if named is None:
            raise ValidationFailed(f"There is no storage domain {name[:100]!r} on host {host.name}.", field="pool")
        return named
    pool = pools.filter(name=settings.STORAGE_POOL).first() or pools.first()
    if pool is None:
        raise Conflict(f"Host {host.name} has no storage pool {settings.STORAGE_POOL!r}; "
                       "an administrator must refresh the host.")
    return pool


def image_volume_name(name: str, *, fmt: str = "qcow2") -> str:
    """The base volume of image `name` in its pool. Portals sharing one libvirtd keep their image
    volumes apart by instance id."""
    prefix = "image" if settings.INSTANCE_ID == "default" else f"image-{settings.INSTANCE_ID}"
    return f"{prefix}-{name}.{fmt}"
