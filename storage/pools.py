"""The portal's pool on a host and the names of image volumes in it (used by the storage services and
the import pipeline alike)."""

from __future__ import annotations

import os

from django.conf import settings

from cluster.models import Host
from portal.exceptions import Conflict
from portal.hypervisor import get_driver

from .models import StoragePool


def pool_ensure(*, host: Host, name: str | None = None, path: str | None = None) -> StoragePool:
    """The host's portal pool, defined and started in libvirt if needed."""
    name = name or settings.STORAGE_POOL
    path = path or settings.STORAGE_DIR
    driver = get_driver(host.uri)
    if driver.capabilities().storage_files:
        os.makedirs(path, exist_ok=True)
    driver.ensure_pool(name, path)
    pool, _ = StoragePool.objects.get_or_create(host=host, name=name, defaults={"path": path})
    return pool


def pool_for_host(host: Host) -> StoragePool:
    """The portal pool of a host (created when the host was registered)."""
    pools = StoragePool.objects.filter(host=host)
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
