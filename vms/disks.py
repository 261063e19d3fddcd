"""A VM's disks: add a new data disk or attach an existing one, remove (detach, optionally delete),
grow, change properties; hot-plugged on a running VM. Every rule is here; doors call these.

STUB (issue #11): signatures fixed, implementation by the disks work.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.db.models import QuerySet

from portal.actors import Actor
from portal.models import Job
from storage.models import Volume

from .models import VM, VMDisk


def vm_disk_add(*, actor: Actor, via: str, vm: VM | int, size_gib: object = None,
                volume: Volume | int | str | None = None, bus: str = VMDisk.Bus.VIRTIO, readonly: bool = False,
                shareable: bool = False, label: str = "", pool: str | None = None,
                properties: Mapping[str, object] | None = None) -> tuple[VMDisk, Job, str]:
    """Add a new blank data disk of `size_gib` (in storage domain `pool`, default the host's), or attach
    the existing data disk `volume` (by id or label); hot-plugged when the VM runs. Returns the
    attachment, the job and a message."""
    raise NotImplementedError


def vm_disk_remove(*, actor: Actor, via: str, vm: VM | int, disk: VMDisk | int | str,
                   delete_volume: bool = False) -> tuple[VMDisk, Job, str]:
    """Detach a data disk (by attachment id, target or label; hot-unplugged when running); with
    `delete_volume` also delete it (refused while other VMs use it). The boot disk cannot be removed."""
    raise NotImplementedError


def vm_disk_grow(*, actor: Actor, via: str, vm: VM | int, disk: VMDisk | int | str,
                 size_gib: object) -> tuple[VMDisk, Job | None, str]:
    """Grow any writable disk of the VM (live when running); charged to the disk quota."""
    raise NotImplementedError


def vm_disk_update(*, actor: Actor, via: str, vm: VM | int, disk: VMDisk | int | str,
                   properties: Mapping[str, object]) -> tuple[VMDisk, Job | None, str]:
    """Change a disk's device properties (validated by vms.properties); applied live where libvirt can
    (I/O limits), else at the VM's next start (the message says which)."""
    raise NotImplementedError


def data_volume_delete(*, actor: Actor, via: str, volume: Volume | int | str) -> tuple[Volume, Job, str]:
    """Delete a detached data disk the actor owns (or any, for administrators)."""
    raise NotImplementedError


def data_volumes_visible(actor: Actor) -> QuerySet[Volume]:
    """The data disks the actor may see and attach: their own, their groups', shareable ones they may use."""
    raise NotImplementedError
