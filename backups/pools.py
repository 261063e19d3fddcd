"""The backup storage domain of a host: the pool (content "backup") named BACKUP_POOL — the one an administrator
added under that name (any kind: a shared or GlusterFS domain too), else a dir pool at BACKUP_DIR defined and
started through the gateway the first time a backup needs it."""

from __future__ import annotations

import os

from django.conf import settings

from cluster.models import Host
from portal.exceptions import Conflict
from portal.hypervisor import get_driver
from storage.models import StoragePool
from storage.pools import uri_is_this_machine


def backup_pool_ensure(host: Host) -> StoragePool:
    """The host's backup pool, made in libvirt (and its directory on this machine) if missing."""
    name, path = settings.BACKUP_POOL, settings.BACKUP_DIR
    listed = StoragePool.objects.filter(host=host, name=name).first()
    if listed is not None:
        if listed.content != StoragePool.Content.BACKUP:  # e.g. listed by hand as a plain pool before
            raise Conflict(f"Storage pool {name} of host {host.name} holds VM disks, not backups: an administrator "
                           "makes it a backup domain (content backup) or sets PORTAL_BACKUP_POOL to another name.")
        path = listed.path
    driver = get_driver(host.uri)
    if driver.capabilities().storage_files and uri_is_this_machine(host.uri):
        os.makedirs(path, exist_ok=True)
    driver.ensure_pool(name, path)
    if listed is not None:
        return listed
    pool, _ = StoragePool.objects.get_or_create(host=host, name=name,
                                                defaults={"path": path, "content": StoragePool.Content.BACKUP})
    return pool
