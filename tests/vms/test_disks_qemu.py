"""Data disks on the real qemu:///system hypervisor, seen from inside the busybox guest (one guest for the
module): a disk hot-plugged on virtio-SCSI shows up in /sys/block, a read-only disk refuses writes, a
hot-unplugged disk leaves /sys/block, a live grow is seen in the guest's size (with a property change too,
in one job), a snapshot of a VM with
several disks works, device properties (cache, serial, a live IOPS limit) reach the
guest, and deleting the VM deletes its own data disks.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
from django.conf import settings

from portal.exceptions import PortalError
from portal.hypervisor import get_driver
from portal.models import Job
from storage.models import Volume
from tests.guest_shell import GuestShell
from vms import services
from vms.disks import vm_disk_add, vm_disk_change, vm_disk_grow, vm_disk_remove, vm_disk_update
from vms.models import VM, DevicePropertyRule, VMDisk
from vms.specs import disk_spec

pytestmark = pytest.mark.qemu

GIB_SECTORS = 2 * 1024 * 1024  # 512-byte sectors in a GiB: /sys/block/*/size


def job_ok(job):
    job = Job.objects.get(pk=job.pk)
    assert job.status == "succeeded", f"{job.kind}: {job.status} {job.error}"
    return job


def wait_for(shell: GuestShell, command: str, expected: str, timeout: float = 60.0) -> None:
    """Until `command`'s output in the guest is `expected` (devices come and go asynchronously)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        last = shell.run(command).output.strip()
        if last == expected:
            return
        time.sleep(0.5)
    raise AssertionError(f"{command!r} gave {last!r}, not {expected!r}, within {timeout} s")


def test_disks_hot_plug_read_only_unplug_and_live_grow_in_the_guest(qemu_host, guest_image, alice):
    result = services.vm_create(actor=alice, via="api", name="disks-1", vcpus=1, memory_mib=256, disk_gib=1)
    job_ok(result.job)
    vm = VM.objects.get(pk=result.vm.pk)
    uuid = str(vm.uuid)
    driver = get_driver(qemu_host.uri)

    with GuestShell(qemu_host.uri, uuid) as shell:
        shell.wait_ready(timeout=180)

        # A new disk hot-plugged on the VM's virtio-SCSI controller: /sys/block/sda, 1 GiB, writable.
        scratch, job, _ = vm_disk_add(actor=alice, via="api", vm=vm, size_gib=1, bus="scsi", label="scratch")
        job_ok(job)
        assert scratch.target == "sda"
        assert {d.target: d.bus for d in driver.domain_disks(uuid)}["sda"] == "scsi"  # live
        assert "sda" in {d.target for d in driver.domain_disks(uuid, inactive=True)}  # and persistent
        wait_for(shell, "cat /sys/block/sda/size 2>/dev/null", str(GIB_SECTORS))
        assert shell.run("cat /sys/block/sda/ro").output.strip() == "0"
        assert shell.run("dd if=/dev/zero of=/dev/sda bs=4096 count=1 conv=fsync 2>&1").status == 0

        # Hot-unplug: the guest releases it and it leaves /sys/block (and the definition).
        job_ok(vm_disk_remove(actor=alice, via="api", vm=vm, disk="scratch")[1])
        wait_for(shell, "ls /sys/block | grep -c '^sda$'", "0")
        assert "sda" not in {d.target for d in driver.domain_disks(uuid, inactive=True)}

        # The same disk attached again, read-only (virtio-blk): a write fails inside the guest.
        ro, job, _ = vm_disk_add(actor=alice, via="api", vm=vm, volume="scratch", readonly=True)
        job_ok(job)
        assert ro.target == "vdb"
        wait_for(shell, "cat /sys/block/vdb/ro 2>/dev/null", "1")
        write = shell.run("dd if=/dev/zero of=/dev/vdb bs=4096 count=1 conv=fsync 2>&1")
        assert write.status != 0, write.output

        # A writable data disk grown live: the guest sees the new size at once.
        data, job, _ = vm_disk_add(actor=alice, via="api", vm=vm, size_gib=1, label="growing")
        job_ok(job)
        assert data.target == "vdc"
        wait_for(shell, "cat /sys/block/vdc/size 2>/dev/null", str(GIB_SECTORS))
        job_ok(vm_disk_grow(actor=alice, via="api", vm=vm, disk="growing", size_gib=2)[1])
        wait_for(shell, "cat /sys/block/vdc/size", str(2 * GIB_SECTORS))
        assert Volume.objects.get(label="growing").capacity_gib == 2

        # Device properties through the disk service: cache=none and a serial on a hot-plugged disk are in
        # the live XML and the guest reads the serial; an IOPS limit changed later applies to the running guest.
        for name in ("cache", "serial", "total_iops_sec"):
            DevicePropertyRule.objects.update_or_create(device="disk", name=name, defaults={"users_may_set": True})
        tuned, job, _ = vm_disk_add(actor=alice, via="api", vm=vm, size_gib=1, label="tuned",
                                    properties={"cache": "none", "serial": "vmp-data-7"})
        job_ok(job)
        assert tuned.target == "vdd"
        live_xml = driver.domain_xml(uuid)
        assert "cache=\"none\"" in live_xml.replace("'", '"') and "<serial>vmp-data-7</serial>" in live_xml
        wait_for(shell, "cat /sys/block/vdd/serial 2>/dev/null", "vmp-data-7")
        _, job, message = vm_disk_update(actor=alice, via="api", vm=vm, disk="tuned",
                                         properties={"total_iops_sec": 500})
        assert "at once" in message
        assert job_ok(job).result["iotune_live"] is True
        assert driver.block_iotune(uuid, "vdd")["total_iops_sec"] == 500
        assert driver.block_iotune(uuid, "vdd", inactive=True)["total_iops_sec"] == 500

        # Size and properties in one request (the API's PATCH): one grow job that applies both.
        _, job, message = vm_disk_change(actor=alice, via="api", vm=vm, disk="growing", size_gib=3,
                                         properties={"total_iops_sec": 300})
        assert job_ok(job).kind == "vm.disk.grow" and "Saved the properties" in message
        wait_for(shell, "cat /sys/block/vdc/size", str(3 * GIB_SECTORS))
        assert driver.block_iotune(uuid, "vdc")["total_iops_sec"] == 300
        assert driver.block_iotune(uuid, "vdc", inactive=True)["total_iops_sec"] == 300

        # A definition change libvirt refuses (trial #1): the gateway puts the old device back, so the
        # definition keeps the disk (detached first, the new one refused, the old one attached again).
        refused = dataclasses.replace(disk_spec(VMDisk.objects.get(pk=tuned.pk)), cache="bogus")
        with pytest.raises(PortalError):
            driver.replace_disk_config(uuid, refused)
        kept = {d.target for d in driver.domain_disks(uuid, inactive=True)}
        assert "vdd" in kept, kept
        assert "<serial>vmp-data-7</serial>" in driver.domain_xml(uuid, inactive=True)

        # A snapshot with the RAM of a VM with several disks (the read-only one is left out of it).
        snapshot, job, _ = services.snapshot_create(actor=alice, via="api", vm=vm, name="many-disks")
        job_ok(job)
        assert shell.run("echo alive-$((6*7))").output.strip() == "alive-42"

    # Deleting the VM deletes its own data disks (not shared, attached only to it), in libvirt too.
    names = set(Volume.objects.filter(label__in=["scratch", "growing", "tuned"]).values_list("name", flat=True))
    assert len(names) == 3
    job_ok(services.vm_delete(actor=alice, via="api", vm=vm).job)
    assert not Volume.objects.filter(label__in=["scratch", "growing", "tuned"]).exists()
    assert not names & {v.name for v in driver.list_volumes(pool=settings.STORAGE_POOL)}
