"""VM lifecycle on the real qemu:///system hypervisor, checked through libvirt itself.

Firmware-only domains (SeaBIOS, no OS) cover the fast power-state cases; one real tiny Linux guest
covers boot, the serial console, ACPI shutdown and a disk that keeps what the guest wrote.
"""

from __future__ import annotations

import os
import uuid
from types import SimpleNamespace

import pytest
from django.conf import settings

from cluster.models import ForeignDomain
from cluster.services import host_probe_kvm, host_sync
from portal.hypervisor import DomainSpec, PowerState, get_driver
from portal.models import AuditEvent, Job
from storage.selectors import image_probe_boot
from vms import services
from vms.choices import VMStatus
from vms.models import VM

pytestmark = pytest.mark.qemu


def state(vm):
    return get_driver(vm.host.uri).domain_info(str(vm.uuid)).state


def job_ok(result):
    job = Job.objects.get(pk=result.job.pk)
    assert job.status == "succeeded", f"{job.kind}: {job.status} {job.error}"
    return job


def test_firmware_vm_power_cycle_through_services(qemu_host, firmware_image, alice):
    result = services.vm_create(actor=alice, via="cli", name="fw-1", vcpus=1, memory_mib=64, disk_gib=1)
    job_ok(result)
    vm = VM.objects.get(pk=result.vm.pk)
    assert vm.status == VMStatus.RUNNING and vm.domain_type == "qemu"
    assert state(vm) == PowerState.RUNNING
    disk = vm.volumes.get()
    assert os.path.exists(disk.path)
    info = get_driver(qemu_host.uri).volume_info(pool=disk.pool.name, name=disk.name)
    assert info.backing_path == firmware_image.path  # a thin overlay on the image

    job_ok(services.vm_pause(actor=alice, via="cli", vm=vm))
    assert state(vm) == PowerState.PAUSED
    job_ok(services.vm_resume(actor=alice, via="cli", vm=vm))
    assert state(vm) == PowerState.RUNNING
    job_ok(services.vm_reboot(actor=alice, via="cli", vm=vm))
    assert state(vm) == PowerState.RUNNING
    job_ok(services.vm_force_off(actor=alice, via="cli", vm=vm))
    assert state(vm) == PowerState.SHUTOFF
    vm.refresh_from_db()
    assert vm.status == VMStatus.STOPPED
    job_ok(services.vm_start(actor=alice, via="cli", vm=vm))
    assert state(vm) == PowerState.RUNNING

    job_ok(services.vm_delete(actor=alice, via="cli", vm=vm))
    assert not get_driver(qemu_host.uri).domain_exists(str(vm.uuid))
    assert not os.path.exists(disk.path)
    vm.refresh_from_db()
    assert vm.status == VMStatus.DELETED


def test_real_guest_boots_answers_on_serial_stops_by_acpi_and_keeps_its_disk(qemu_host, guest_image, alice):
    result = services.vm_create(actor=alice, via="api", name="linux-1", image=guest_image,
                                 vcpus=1, memory_mib=128, disk_gib=1)
    job_ok(result)
    vm = VM.objects.get(pk=result.vm.pk)
    driver = get_driver(qemu_host.uri)
    assert state(vm) == PowerState.RUNNING

    console = driver.open_console(str(vm.uuid))
    try:
        # The guest prints its banner once booted; then a shell answers on ttyS0.
        console.read_until(b"PORTAL GUEST READY", timeout=60)
        token = uuid.uuid4().hex[:10]
        console.write(f"echo {token} > /root/proof; sync; echo wrote-$((6*7))\n".encode())
        console.read_until(b"wrote-42", timeout=20)
    finally:
        console.close()

    # A RAM snapshot, a change, a revert: the guest is back where it was, without rebooting.
    snapshot, job, _ = services.snapshot_create(actor=alice, via="api", vm=vm, name="before")
    job_ok(SimpleNamespace(job=job))
    taken = {s.name: s for s in driver.list_snapshots(str(vm.uuid))}["before"]
    assert taken.has_memory and taken.state == PowerState.RUNNING
    console = driver.open_console(str(vm.uuid))
    try:
        console.write(b"echo changed > /root/after; sync; echo wrote-$((7*6))-again\n")
        console.read_until(b"wrote-42-again", timeout=20)
    finally:
        console.close()
    job_ok(SimpleNamespace(job=services.snapshot_revert(actor=alice, via="api", vm=vm, snapshot=snapshot)[1]))
    vm.refresh_from_db()
    assert vm.status == VMStatus.RUNNING and state(vm) == PowerState.RUNNING
    console = driver.open_console(str(vm.uuid))
    try:
        console.write(b"\ntest -e /root/after && echo after-$((2*3))-present || echo after-$((2*3))-gone; "
                      b"echo end-$((3*3))\n")
        seen = console.read_until(b"end-9", timeout=20)
        assert b"after-6-gone" in seen  # disk and memory rolled back; the shell still answers
    finally:
        console.close()

    # The disk grows live: the running guest sees 2 GiB (4194304 sectors) at once.
    job_ok(services.vm_grow_disk(actor=alice, via="api", vm=vm, disk_gib=2))
    console = driver.open_console(str(vm.uuid))
    try:
        console.write(b"echo sectors-$(cat /sys/block/vda/size)-end\n")
        assert b"sectors-4194304-end" in console.read_until(b"sectors-4194304-end", timeout=20)
    finally:
        console.close()

    job_ok(services.vm_stop(actor=alice, via="web", vm=vm))  # ACPI power button
    vm.refresh_from_db()
    assert vm.status == VMStatus.STOPPED
    assert state(vm) == PowerState.SHUTOFF

    job_ok(services.vm_start(actor=alice, via="web", vm=vm))
    console = driver.open_console(str(vm.uuid))
    try:
        console.read_until(b"PORTAL GUEST READY", timeout=60)
        console.write(b"cat /root/proof\n")
        console.read_until(token.encode(), timeout=20)  # the qcow2 overlay kept the guest's write
    finally:
        console.close()

    job_ok(services.vm_delete(actor=alice, via="web", vm=vm))
    assert not driver.domain_exists(str(vm.uuid))
    assert vm.volumes.count() == 0


def test_drift_is_detected_and_foreign_domains_are_listed_never_touched(qemu_host, firmware_image, alice):
    driver = get_driver(qemu_host.uri)
    vm = services.vm_create(actor=alice, via="cli", name="drift-1", vcpus=1, memory_mib=64, disk_gib=1).vm
    vm.refresh_from_db()
    assert vm.status == VMStatus.RUNNING

    driver.destroy(str(vm.uuid))  # as `virsh destroy` would
    host_sync(host=qemu_host)
    vm.refresh_from_db()
    assert vm.status == VMStatus.STOPPED
    assert AuditEvent.objects.filter(target_id=str(vm.pk), action="vm.drift").exists()

    driver.undefine(str(vm.uuid))  # as `virsh undefine` would
    host_sync(host=qemu_host)
    vm.refresh_from_db()
    assert vm.status == VMStatus.ERROR and "missing" in vm.last_error
    job_ok(services.vm_start(actor=alice, via="cli", vm=vm))  # re-created from the portal's record
    assert state(vm) == PowerState.RUNNING

    foreign = DomainSpec(name=f"{settings.DOMAIN_PREFIX}-handmade-{uuid.uuid4().hex[:6]}",
                         uuid=str(uuid.uuid4()), vcpus=1, memory_mib=64, domain_type="qemu")
    driver.define(foreign)
    driver.start(foreign.uuid)
    try:
        host_sync(host=qemu_host)
        row = ForeignDomain.objects.get(host=qemu_host, uuid=foreign.uuid)
        assert row.state == "running"
        assert driver.domain_info(foreign.uuid).state == PowerState.RUNNING  # untouched
    finally:
        driver.undefine(foreign.uuid)
    job_ok(services.vm_delete(actor=alice, via="cli", vm=vm))


def test_auto_domain_type_probes_kvm_once_and_falls_back_to_qemu_here(qemu_host, guest_image):
    """/dev/kvm on these machines cannot boot Linux: auto must pick plain QEMU, and remember it."""
    qemu_host.domain_type = "auto"
    qemu_host.kvm_boots_guests = None
    qemu_host.save()
    boots = host_probe_kvm(host=qemu_host, boot=image_probe_boot(), timeout=12)
    qemu_host.refresh_from_db()
    assert qemu_host.kvm_probed_at is not None
    if "kvm" in get_driver(qemu_host.uri).domain_types() and _cpu_has_virt():
        assert boots is True and qemu_host.effective_domain_type == "kvm"
    else:
        assert boots is False and qemu_host.effective_domain_type == "qemu"
    # Remembered: a second call does not probe again.
    assert host_probe_kvm(host=qemu_host, boot=image_probe_boot()) is boots
    assert not [d for d in get_driver(qemu_host.uri).list_domains() if "kvmprobe" in d.name]


def _cpu_has_virt() -> bool:
    with open("/proc/cpuinfo") as fh:
        flags = fh.read()
    return " vmx" in flags or " svm" in flags
