"""Device properties and snapshot space on the real qemu:///system hypervisor, with ONE busybox guest:
a root disk with cache=none and a serial (the live XML has them, the guest reads the serial), an IOPS
limit changed live, and the space snapshots of the running guest hold, measured from its qcow2 file
(a second one charged only what it adds).
"""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET

import pytest

from portal.hypervisor import get_driver
from portal.models import Job
from tests.guest_shell import GuestShell
from vms import services
from vms.models import VM
from vms.selectors import snapshot_space_gib, vm_quota_usage
from vms.specs import build_spec

pytestmark = pytest.mark.qemu
SERIAL = "PORTAL-SER_1.a"


def vda(xml: str) -> ET.Element:
    return next(d for d in ET.fromstring(xml).findall("devices/disk") if d.find("target").get("dev") == "vda")


def qemu_img_info(path: str) -> dict:
    return json.loads(subprocess.run(["qemu-img", "info", "--force-share", "--output=json", "-f", "qcow2", path],
                                     capture_output=True, text=True, check=True).stdout)


def job_ok(job):
    job = Job.objects.get(pk=job.pk)
    assert job.status == "succeeded", f"{job.kind}: {job.status} {job.error}"


def test_disk_properties_reach_the_guest_and_a_snapshot_s_space_is_measured(qemu_host, guest_image, alice):
    result = services.vm_create(actor=alice, via="api", name="props-1", image=guest_image, vcpus=1,
                                memory_mib=128, disk_gib=1, start=False)
    job_ok(result.job)
    vm = VM.objects.get(pk=result.vm.pk)
    uuid = str(vm.uuid)
    driver = get_driver(qemu_host.uri)
    # The disk doors (vms.disks) store validated properties; here the row is set directly, and the
    # definition written again from the record, as they do.
    root = vm.disks.get(target="vda")
    root.properties = {"cache": "none", "io": "native", "serial": SERIAL}
    root.save(update_fields=["properties"])
    driver.define(build_spec(vm, domain_type=vm.domain_type))
    job_ok(services.vm_start(actor=alice, via="api", vm=vm).job)

    disk = vda(driver.domain_xml(uuid))
    assert disk.find("driver").get("cache") == "none" and disk.find("driver").get("io") == "native"
    assert disk.findtext("serial") == SERIAL

    driver.set_block_iotune(uuid, "vda", {"total_iops_sec": 400}, live=True)
    assert driver.block_iotune(uuid, "vda")["total_iops_sec"] == 400  # applied to the running QEMU
    assert driver.block_iotune(uuid, "vda", inactive=True)["total_iops_sec"] == 400  # and kept
    assert vda(driver.domain_xml(uuid)).findtext("iotune/total_iops_sec") == "400"

    with GuestShell(qemu_host.uri, uuid) as shell:
        shell.wait_ready(timeout=180)
        assert shell.run("cat /sys/block/vda/serial").output.strip() == SERIAL  # virtio-blk's serial
        # the guest's disk works under the limit: a direct read of 1 MiB
        assert shell.run("dd if=/dev/vda of=/dev/null bs=64k count=16 2>/dev/null && echo read-ok").output.strip() \
            == "read-ok"

        snapshot, job, _ = services.snapshot_create(actor=alice, via="api", vm=vm, name="with-ram")
        job_ok(job)
    snapshot.refresh_from_db()
    assert snapshot.has_memory
    # What it holds, from the file itself: its RAM state plus the guest data of the disk then.
    info = qemu_img_info(root.volume.path)
    state = {s["name"]: int(s["vm-state-size"]) for s in info["snapshots"]}["with-ram"]
    assert state > 1024**2  # a running guest's RAM state: more than a MiB
    assert state < snapshot.size_bytes <= state + int(info["actual-size"])
    assert snapshot_space_gib(user=alice) == -(-snapshot.size_bytes // 1024**3)
    assert vm_quota_usage(user=alice)["disk_gib"] == 1 + snapshot_space_gib(user=alice)
    # A second snapshot is charged what it adds (its RAM state and the data written since), not the
    # disk's data again: both together hold no more than the file takes now.
    again, job, _ = services.snapshot_create(actor=alice, via="api", vm=vm, name="again")
    job_ok(job)
    again.refresh_from_db()
    info = qemu_img_info(root.volume.path)
    state_again = {s["name"]: int(s["vm-state-size"]) for s in info["snapshots"]}["again"]
    assert state_again <= again.size_bytes
    assert snapshot.size_bytes + again.size_bytes <= int(info["actual-size"])
    assert vm_quota_usage(user=alice)["disk_gib"] == 1 + -(-(snapshot.size_bytes + again.size_bytes) // 1024**3)
    job_ok(services.vm_force_off(actor=alice, via="api", vm=vm).job)
