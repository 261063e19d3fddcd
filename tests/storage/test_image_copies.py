"""Images on several hosts (issue #12): a VM is created on any host of a cluster, not only the image's.

On the two-host harness (`cluster_hosts`, real libvirtd daemons reached over qemu+tcp): the busybox guest's
image is registered on host a; VMs made on host b are built on its copy there, streamed through libvirt's
volume API (download from a, upload to b), with the kernel and initrd uploaded from the portal server.
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from cluster.services import host_set_enabled
from portal.hypervisor import get_driver
from portal.models import AuditEvent, Job
from storage.copies import copy_volume_names, image_copy_ensure
from storage.models import ImageCopy
from storage.services import image_delete, image_register
from tests.guest_shell import GuestShell
from vms import services
from vms.choices import VMStatus
from vms.models import VM

GUEST_DIR = Path(settings.GUEST_DIR)
pytestmark = [pytest.mark.qemu, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]


def _guest_image(host, name: str = "test-guest-copies"):
    root = GUEST_DIR / "root.qcow2"
    if not root.exists():
        pytest.fail(f"{root} is missing: run scripts/build-guest.sh (make test does)")
    return image_register(
        actor=None, host=host, name=name, title="Tiny Linux guest (host a)", source_path=str(root), fmt="qcow2",
        boot_mode="kernel", kernel_path=str(GUEST_DIR / "vmlinuz"), initrd_path=str(GUEST_DIR / "initrd.gz"),
        cmdline="console=tty0 console=ttyS0,115200 portalroot=/dev/vda portalhost={hostname}",
        ready_marker="PORTAL GUEST READY", replace=True)


def _volumes(hv) -> set[str]:
    """The volume names in a namespace host's portal pool, as virsh lists them."""
    out = hv.virsh("vol-list", "--pool", settings.STORAGE_POOL).stdout
    rows = [line.split() for line in out.splitlines() if line.strip() and not line.lstrip().startswith("---")]
    return {row[0] for row in rows if row[0] != "Name"}


def _create(alice, image, name: str) -> VM:
    result = services.vm_create(actor=alice, via="cli", name=name, image=image, vcpus=1, memory_mib=128,
                                disk_gib=1, networks=[])
    return VM.objects.select_related("host").get(pk=result.vm.pk)


def _copies_made(image) -> int:
    return AuditEvent.objects.filter(action="image.copy", target_id=str(image.pk)).count()


def test_vm_on_another_host_boots_from_the_image_copy_made_once_and_removed_with_the_image(
        cluster_hosts, ns_pair, admin_user, alice):
    host_a, host_b = cluster_hosts
    hv_b = ns_pair[1]
    image = _guest_image(host_a)
    host_set_enabled(actor=admin_user, via="cli", host=host_a, enabled=False)  # new VMs land on host b

    vm = _create(alice, image, "copy-1")
    job = Job.objects.filter(kind="vm.create", target_id=str(vm.pk)).get()
    assert vm.host == host_b and vm.status == VMStatus.RUNNING, (vm.status, vm.last_error, job.error)
    assert f"Copying image {image.name} to host {host_b.name}" in job.log, job.log

    copy = ImageCopy.objects.get(image=image)
    pool_dir = str(hv_b.pool_dir)
    assert copy.pool.host == host_b and copy.claim == "" and copy.size_bytes > 0
    for path in (copy.path, copy.kernel_path, copy.initrd_path):
        assert path.startswith(pool_dir + "/"), (path, pool_dir)
    names = copy_volume_names(image=image, host=host_b)
    assert set(names) <= _volumes(hv_b)

    # The domain on host b boots host b's files: kernel, initrd, and a disk backed by the copy.
    driver_b = get_driver(host_b.uri)
    live = ET.fromstring(driver_b.domain_xml(str(vm.uuid)))
    assert live.findtext("os/kernel") == copy.kernel_path
    assert live.findtext("os/initrd") == copy.initrd_path
    disk = services.vm_root_disk(vm).volume
    assert driver_b.volume_info(pool=disk.pool.name, name=disk.name).backing_path == copy.path
    with GuestShell(host_b.uri, str(vm.uuid)) as shell:
        shell.wait_ready(timeout=300)  # the guest booted on host b

    # A second VM on host b reuses the copy.
    vm2 = _create(alice, image, "copy-2")
    job2 = Job.objects.filter(kind="vm.create", target_id=str(vm2.pk)).get()
    assert vm2.host == host_b and vm2.status == VMStatus.RUNNING, (vm2.status, job2.error)
    assert "Copying image" not in job2.log
    assert _copies_made(image) == 1 and ImageCopy.objects.count() == 1

    # The image cannot go while VMs on host b are built on its copy; with them gone, its copies go too.
    with pytest.raises(Exception, match="in use"):
        image_delete(actor=admin_user, via="cli", image=image)
    for v in (vm, vm2):
        services.vm_delete(actor=alice, via="cli", vm=v)
    image_delete(actor=admin_user, via="cli", image=image)
    assert not ImageCopy.objects.exists()
    assert not set(names) & _volumes(hv_b)


def test_a_failed_copy_leaves_no_half_volume_and_a_clear_job_error(cluster_hosts, ns_pair, admin_user, alice):
    host_a, host_b = cluster_hosts
    hv_b = ns_pair[1]
    image = _guest_image(host_a, name="test-guest-gone")
    # The source is gone behind the portal's back: the copy cannot be made.
    get_driver(host_a.uri).delete_volume(pool=image.pool.name, name=image.volume_name)
    host_set_enabled(actor=admin_user, via="cli", host=host_a, enabled=False)

    vm = _create(alice, image, "copy-fails")
    job = Job.objects.filter(kind="vm.create", target_id=str(vm.pk)).get()
    assert job.status == "failed", (job.status, job.error)
    assert vm.status == VMStatus.DELETED and "Create failed" in vm.last_error
    assert f"The volume of image {image.name} is missing on its host {host_a.name}" in job.error, job.error
    assert not set(copy_volume_names(image=image, host=host_b)) & _volumes(hv_b)
    copy = ImageCopy.objects.get(image=image)
    assert copy.path == "" and copy.claim == ""  # not made, not claimed: the next create tries again


@pytest.mark.postgres
@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent ensures need PostgreSQL")
def test_concurrent_ensures_of_one_image_copy_it_once(cluster_hosts, ns_pair):
    host_a, host_b = cluster_hosts
    image = _guest_image(host_a, name="test-guest-race")
    barrier = threading.Barrier(3)
    paths: list[str] = []
    errors: list[BaseException] = []

    def ensure() -> None:
        try:
            barrier.wait(timeout=30)
            paths.append(image_copy_ensure(image=image, host=host_b).path)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=ensure) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert len(paths) == 3 and len(set(paths)) == 1 and paths[0]
    assert _copies_made(image) == 1
