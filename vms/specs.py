"""VM row -> DomainSpec for the gateway."""

from __future__ import annotations

from django.conf import settings

from portal.hypervisor import DiskSpec, DomainSpec

from .models import VM


def domain_metadata(vm: VM) -> dict[str, str]:
    return {
        "instance": settings.INSTANCE_ID,
        "vm-id": str(vm.pk),
        "owner": vm.owner.get_username(),
        "created-via": vm.created_via,
    }


def build_spec(vm: VM, *, domain_type: str) -> DomainSpec:
    from consoles.services import console_graphics_password  # consoles builds on vms: import late

    image = vm.image
    disks = tuple(
        DiskSpec(path=v.path, target=v.target, bus=v.bus, format=v.format, readonly=v.readonly)
        for v in vm.volumes.all()
    )
    kernel = initrd = cmdline = None
    if image is not None and image.boot_mode == image.BootMode.KERNEL:
        kernel, initrd = image.kernel_path or None, image.initrd_path or None
        cmdline = image.cmdline.replace("{hostname}", vm.name) if image.cmdline else None
    return DomainSpec(
        name=vm.domain_name,
        uuid=str(vm.uuid),
        vcpus=vm.vcpus,
        memory_mib=vm.memory_mib,
        domain_type=domain_type,
        title=vm.name,
        description=vm.description,
        disks=disks,
        kernel=kernel,
        initrd=initrd,
        cmdline=cmdline,
        graphics_listen=settings.GRAPHICS_LISTEN,
        graphics_password=console_graphics_password(vm),
        metadata=domain_metadata(vm),
    )
