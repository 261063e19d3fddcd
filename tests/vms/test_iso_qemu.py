"""An ISO install on the real qemu:///system hypervisor: a VM with an empty disk boots the busybox guest
from its CD (scripts/build-guest-iso.sh: ISOLINUX under SeaBIOS), and the CD is ejected while it runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from portal.hypervisor import get_driver
from portal.hypervisor.domain_xml import boot_order
from portal.models import Job
from storage.models import Image
from storage.services import image_register
from tests.guest_shell import GuestShell
from vms import services
from vms.models import VM

pytestmark = pytest.mark.qemu


@pytest.fixture
def guest_iso(qemu_host):
    """The busybox guest as a bootable ISO, in the host's pool as an ISO image."""
    iso = Path(settings.GUEST_DIR) / "guest.iso"
    if not iso.exists():
        pytest.fail(f"{iso} is missing: run scripts/build-guest-iso.sh (setup.sh --test does)")
    image = image_register(actor=None, host=qemu_host, name="test-guest-iso", title="Tiny Linux guest (ISO)",
                           source_path=str(iso), fmt="iso", replace=True)
    Image.objects.filter(pk=image.pk).update(kind=Image.Kind.ISO)
    image.refresh_from_db()
    return image


def job_ok(result):
    job = Job.objects.get(pk=result.job.pk)
    assert job.status == "succeeded", f"{job.kind}: {job.status} {job.error}"


def test_vm_boots_from_the_iso_onto_an_empty_disk_and_the_cd_ejects_while_it_runs(qemu_host, guest_iso, alice):
    result = services.vm_create(actor=alice, via="api", name="iso-1", image=guest_iso,
                                vcpus=1, memory_mib=128, disk_gib=1)
    job_ok(result)
    vm = VM.objects.get(pk=result.vm.pk)
    uuid = str(vm.uuid)
    driver = get_driver(qemu_host.uri)
    assert boot_order(driver.domain_xml(uuid, inactive=True)) == ["cdrom", "hd"]
    assert [c.path for c in driver.domain_cdroms(uuid)] == [guest_iso.path]
    root = vm.disks.get(target="vda").volume
    assert driver.volume_info(pool=root.pool.name, name=root.name).backing_path is None  # an empty disk

    with GuestShell(qemu_host.uri, uuid) as shell:
        # ISOLINUX boots the guest at once; it stays in its initramfs (no root given on the CD).
        shell.read_until(b"PORTAL GUEST READY host=iso-guest root=initramfs", timeout=120)
        shell.wait_ready(timeout=60)
        cmdline = shell.run("cat /proc/cmdline")
        assert "portalhost=iso-guest" in cmdline.output  # the ISO's isolinux.cfg, not a kernel file
        assert shell.run("cat /sys/block/vda/size").output.strip() == str(2 * 1024 * 1024)  # 1 GiB, blank

        job_ok(services.vm_cdrom_eject(actor=alice, via="api", vm=vm))
        assert [c.path for c in driver.domain_cdroms(uuid)] == [None]  # the live tray is empty
        assert [c.path for c in driver.domain_cdroms(uuid, inactive=True)] == [None]  # and stays so
        assert shell.run("echo still-$((6*7))").output.strip() == "still-42"  # the guest runs on
    vm.refresh_from_db()
    assert vm.cdrom is None and vm.cdrom_drive and vm.status == "running"
