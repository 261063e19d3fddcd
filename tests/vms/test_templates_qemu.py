"""Templates on the real qemu:///system hypervisor: the tiny Linux guest is sealed into a template, and a
thin clone and a full copy of it both boot and find what the guest had written before."""

from __future__ import annotations

import uuid

import pytest

from portal.hypervisor import get_driver
from portal.models import Job
from storage.models import Image
from tests.guest_shell import GuestShell
from vms import services
from vms.choices import VMStatus
from vms.models import VM

pytestmark = pytest.mark.qemu

def job_ok(job: Job) -> Job:
    job.refresh_from_db()
    assert job.status == "succeeded", f"{job.kind}: {job.status} {job.error}"
    return job


def boots_and_finds(driver, vm: VM, token: str) -> None:
    """The VM's shell answers and its disk holds the token the template's guest wrote. The console may
    attach after the boot banner went by (both clones boot at once), so the shell is asked, not awaited."""
    with GuestShell(driver.uri, str(vm.uuid)) as shell:
        shell.wait_ready(timeout=180)
        result = shell.run("cat /root/proof")
        assert result.status == 0 and token in result.output, result.output


def test_a_stopped_guest_becomes_a_template_and_thin_and_full_clones_boot(qemu_host, guest_image, alice):
    driver = get_driver(qemu_host.uri)
    source = services.vm_create(actor=alice, via="api", name="gold", image=guest_image, vcpus=1, memory_mib=128,
                                disk_gib=1)
    job_ok(source.job)
    vm = VM.objects.get(pk=source.vm.pk)
    token = uuid.uuid4().hex[:10]
    with GuestShell(qemu_host.uri, str(vm.uuid)) as shell:
        shell.wait_ready(timeout=180)
        assert shell.run(f"echo {token} > /root/proof; sync").status == 0
    job_ok(services.vm_stop(actor=alice, via="api", vm=vm).job)

    job_ok(services.vm_template_create(actor=alice, via="api", vm=vm, name="gold-tpl", title="Gold"))
    template = Image.objects.get(name="gold-tpl")
    assert template.kind == Image.Kind.TEMPLATE and template.owner == alice and template.source == "vm:gold"
    assert template.size_bytes == 1024**3 and 0 < template.actual_size_bytes < template.size_bytes
    assert len(template.checksum_sha256) == 64
    assert (template.default_vcpus, template.default_memory_mib, template.min_disk_gib) == (1, 128, 1)
    assert template.boot_mode == "kernel" and template.ready_marker == guest_image.ready_marker
    base = driver.volume_info(pool=template.pool.name, name=template.volume_name)
    assert base.backing_path is None  # flattened: the template needs neither the VM nor its image
    assert driver.volume_checksum(pool=template.pool.name, name=template.volume_name) == template.checksum_sha256
    vm.refresh_from_db()
    assert vm.status == VMStatus.STOPPED  # the source VM is as it was

    thin = services.vm_create(actor=alice, via="api", name="gold-thin", image=template)  # the template's sizes
    full = services.vm_create(actor=alice, via="api", name="gold-full", image=template, clone="full")
    job_ok(thin.job)
    job_ok(full.job)
    thin_vm, full_vm = VM.objects.get(pk=thin.vm.pk), VM.objects.get(pk=full.vm.pk)
    thin_disk = thin_vm.disks.get(target="vda").volume
    full_disk = full_vm.disks.get(target="vda").volume
    assert driver.volume_info(pool=thin_disk.pool.name, name=thin_disk.name).backing_path == template.path
    full_info = driver.volume_info(pool=full_disk.pool.name, name=full_disk.name)
    assert full_info.backing_path is None and full_info.capacity_bytes == 1024**3
    assert full_disk.copy_of == template
    boots_and_finds(driver, thin_vm, token)
    boots_and_finds(driver, full_vm, token)

    for each in (thin_vm, full_vm, vm):
        job_ok(services.vm_delete(actor=alice, via="api", vm=each).job)
