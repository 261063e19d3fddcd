"""VM row -> DomainSpec for the gateway.

Apps above vms add their part of a domain through registered contributors (consoles gives the
display's password; networks will give NICs): a contributor returns DomainSpec fields for a VM.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings

from cluster.hostconfig import host_graphics_listen
from portal.hypervisor import CdromSpec, DiskSpec, DomainSpec, NicSpec
from storage.selectors import image_boot_files, image_media_path

from .models import VM, VMDisk, VMNic
from .properties import disk_spec_properties, nic_spec_properties

CDROM_TARGET = "hdc"  # the drive of VMs the portal makes: IDE secondary master, as on a PC (VM.cdrom_target)
SpecContributor = Callable[[VM], dict[str, Any]]
_contributors: list[SpecContributor] = []


def register_spec_contributor(contributor: SpecContributor) -> None:
    """Add a function whose DomainSpec fields are merged into every VM's domain (once)."""
    if contributor not in _contributors:
        _contributors.append(contributor)


def domain_metadata(vm: VM) -> dict[str, str]:
    return {
        "instance": settings.INSTANCE_ID,
        "vm-id": str(vm.pk),
        "owner": vm.owner.get_username(),
        "created-via": vm.created_via,
    }


def build_spec(vm: VM, *, domain_type: str) -> DomainSpec:
    image = vm.image
    disks = tuple(disk_spec(d) for d in vm.disks.select_related("volume").exclude(
        status=VMDisk.Status.DETACHING).order_by("target"))
    nics = tuple(
        NicSpec(network=n.network.libvirt_name, mac=n.mac, model=n.model, **nic_spec_properties(n.properties or {}))
        for n in vm.nics.select_related("network").exclude(status=VMNic.Status.DETACHING).order_by("created_at", "id")
    )
    cdroms: tuple[CdromSpec, ...] = ()
    if vm.cdrom_drive:
        media = vm.cdrom
        cdroms = (CdromSpec(target=vm.cdrom_target or CDROM_TARGET, bus=vm.cdrom_bus or "ide",
                            path=image_media_path(image=media, host=vm.host) if media else None,
                            format=media.format if media else "raw"),)
    kernel = initrd = cmdline = None
    # A VM installed from an ISO boots its firmware (CD first, then its disk), never a kernel file.
    if image is not None and image.boot_mode == image.BootMode.KERNEL and image.kind != image.Kind.ISO:
        # Files of the VM's host: the image's copy there, or the image's own on the image's host.
        kernel_path, initrd_path = image_boot_files(image=image, host=vm.host)
        kernel, initrd = kernel_path or None, initrd_path or None
        cmdline = image.cmdline.replace("{hostname}", vm.name) if image.cmdline else None
    extra: dict[str, Any] = {}
    for contributor in _contributors:
        extra.update(contributor(vm))
    return DomainSpec(
        name=vm.domain_name,
        uuid=str(vm.uuid),
        vcpus=vm.vcpus,
        memory_mib=vm.memory_mib,
        domain_type=domain_type,
        title=vm.name,
        description=vm.description,
        disks=disks,
        nics=nics,
        cdroms=cdroms,
        kernel=kernel,
        initrd=initrd,
        cmdline=cmdline,
        graphics_listen=host_graphics_listen(vm.host),  # per host: cluster.hostconfig.host_display_address
        metadata=domain_metadata(vm),
        **extra,
    )


# --- disks (issue #11) ---------------------------------------------------------------------------

def disk_spec(disk: VMDisk) -> DiskSpec:
    """The gateway's view of one attached disk: its volume, where the guest sees it, read-only and
    shareable (a shared disk is always attached read-only), and its device properties."""
    extra: dict[str, Any] = {}
    if disk.properties:
        extra = disk_spec_properties(disk.properties)
    return DiskSpec(path=disk.volume.path, target=disk.target, bus=disk.bus, format=disk.volume.format,
                    readonly=disk.readonly, shareable=disk.volume.shareable and disk.readonly, **extra)
