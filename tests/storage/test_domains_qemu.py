"""A GlusterFS storage domain on the real qemu:///system hypervisor (scripts/gluster.sh runs a single-brick
volume on this machine; libvirt mounts it over FUSE as a netfs pool): it holds a running VM's disk, the guest
writes to it, deleting the VM leaves no volume there; a volume that is down is a clear error with nothing left.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from portal.choices import Via
from portal.exceptions import Conflict, NotFound, ValidationFailed
from portal.hypervisor import get_driver
from portal.hypervisor.domain_xml import disk_paths
from portal.models import Job
from storage.domains import domain_add, domain_refresh, domain_remove
from storage.models import StoragePool
from tests.guest_shell import GuestShell
from vms import services
from vms.models import VM

pytestmark = pytest.mark.qemu

BRICKS = Path(os.environ.get("PORTAL_GLUSTER_DIR", "/var/lib/vmportal/gluster")) / "bricks"


def _name() -> str:
    return f"{settings.DOMAIN_PREFIX}-gl-{uuid.uuid4().hex[:6]}"


def _mount_of(path: str) -> str:
    """The file system type /proc/mounts gives for mount point `path` ('' when nothing is mounted there)."""
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if fields[1] == path:
            return fields[2]
    return ""


def _job_ok(result) -> None:
    job = Job.objects.get(pk=result.job.pk)
    assert job.status == "succeeded", f"{job.kind}: {job.status} {job.error}"


@pytest.fixture
def gluster_domain(qemu_host, gluster_volume, admin_user):
    name = _name()
    pools = domain_add(actor=admin_user, via=Via.CLI, name=name, kind=StoragePool.Kind.GLUSTERFS, hosts=[qemu_host],
                       source_host=gluster_volume["host"], source_name=gluster_volume["volume"])
    yield pools[0]
    driver = get_driver(qemu_host.uri)
    for vm in VM.objects.filter(disks__volume__pool__name=name).distinct():  # a failed test's VM
        driver.undefine(str(vm.uuid))
    try:
        leftovers = driver.list_volumes(pool=name)
    except NotFound:  # the test removed the domain itself
        return
    for vol in leftovers:
        driver.delete_volume(pool=name, name=vol.name)
    driver.remove_pool(name)


def test_a_glusterfs_domain_holds_a_running_vms_disk(qemu_host, guest_image, gluster_domain, gluster_volume,
                                                     admin_user, alice):
    pool = gluster_domain
    assert _mount_of(pool.path) == "fuse.glusterfs"  # libvirt mounted the volume at the pool's path
    assert pool.capacity_bytes > 0 and pool.active and pool.shared

    result = services.vm_create(actor=alice, via=Via.API, name="on-gluster", image=guest_image, vcpus=1,
                                memory_mib=128, disk_gib=1, storage_domain=pool.name)
    _job_ok(result)
    vm = VM.objects.get(pk=result.vm.pk)
    root = vm.disks.get(target="vda").volume
    assert root.pool_id == pool.pk
    driver = get_driver(qemu_host.uri)
    live = disk_paths(driver.domain_xml(str(vm.uuid)))
    assert root.path in live and root.path.startswith(pool.path + "/")  # the running domain's disk is on gluster
    brick_file = BRICKS / gluster_volume["volume"] / root.name
    assert brick_file.exists()  # stored in the volume's brick: GlusterFS holds it

    before = driver.volume_info(pool=pool.name, name=root.name).allocation_bytes
    with GuestShell(qemu_host.uri, str(vm.uuid)) as shell:
        shell.wait_ready(timeout=180)
        wrote = shell.run("dd if=/dev/urandom of=/root/blob bs=1M count=4 2>/dev/null; sync; "
                          "md5sum /root/blob | cut -c1-32", timeout=60)
        assert len(wrote.output.strip().splitlines()[-1]) == 32  # (kernel messages may come first)
    after = driver.volume_info(pool=pool.name, name=root.name).allocation_bytes
    assert after >= before + 4 * 1024**2  # the guest's writes landed in the disk on the gluster mount

    domain = domain_refresh(actor=admin_user, via=Via.CLI, name=pool.name)[0]
    assert domain.allocation_bytes > 0 and [h.name for h in domain.hosts] == [qemu_host.name]
    with pytest.raises(Conflict, match="in use"):
        domain_remove(actor=admin_user, via=Via.CLI, name=pool.name)

    _job_ok(services.vm_delete(actor=alice, via=Via.API, vm=vm, confirm_name=vm.name))
    assert driver.list_volumes(pool=pool.name) == []  # nothing left on gluster
    assert not brick_file.exists()
    assert domain_remove(actor=admin_user, via=Via.CLI, name=pool.name) == 1
    assert _mount_of(pool.path) == ""  # unmounted
    with pytest.raises(NotFound):
        driver.pool_info(pool.name)


def test_a_gluster_volume_that_is_down_or_unknown_is_a_clear_error_with_nothing_left(
        qemu_host, gluster_volume, admin_user):
    driver = get_driver(qemu_host.uri)
    for volume in (gluster_volume["stopped"], "no-such-volume"):
        name = _name()
        with pytest.raises(ValidationFailed, match=f"GlusterFS volume {volume} on .* could not be mounted") as info:
            domain_add(actor=admin_user, via=Via.CLI, name=name, kind=StoragePool.Kind.GLUSTERFS,
                       hosts=[qemu_host], source_host=gluster_volume["host"], source_name=volume)
        assert "source_name" in info.value.errors
        assert "mount" in info.value.detail.lower()  # libvirt's words, for administrators
        with pytest.raises(NotFound):
            driver.pool_info(name)  # nothing left defined in libvirt
        assert not StoragePool.objects.filter(name=name).exists()  # and no row
