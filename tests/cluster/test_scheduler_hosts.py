"""One placement on the real two-host harness: host a is full, so vm_create puts the VM on host b, whose
libvirtd then gets the domain (the image is registered on host b only; no image copy is involved)."""

from __future__ import annotations

import tempfile

import pytest

from cluster.placement import host_loads
from portal.hypervisor import get_driver
from storage.services import image_register
from vms import services
from vms.choices import VMStatus
from vms.models import VM


@pytest.mark.timeout(300)
def test_a_full_host_a_sends_the_new_vm_to_host_b(cluster_hosts, make_user, admin_user):
    host_a, host_b = cluster_hosts
    assert host_a.memory_mib > 0 and host_b.memory_mib > 0
    # Host a is full: a VM row holds all its memory (never started: only the scheduler looks at it).
    VM.objects.create(name="hog", owner=admin_user, host=host_a, vcpus=1, memory_mib=host_a.memory_mib, disk_gib=1,
                      status=VMStatus.STOPPED)
    with tempfile.NamedTemporaryFile(suffix=".img") as fh:
        fh.write(b"\0" * 510 + b"\x55\xaa" + b"\0" * 3584)  # a blank disk with an MBR
        fh.flush()
        image = image_register(actor=None, host=host_b, name="sched-blank", title="Blank", source_path=fh.name,
                               fmt="raw")
    user = make_user("placer", quota={"max_vms": 2, "max_vcpus": 2, "max_memory_mib": 1024, "max_disk_gib": 5})

    result = services.vm_create(actor=user, via="api", name="lands-on-b", image=image, vcpus=1, memory_mib=64,
                                disk_gib=1, start=False)

    vm = VM.objects.get(pk=result.vm.pk)
    assert vm.host == host_b
    job = result.job
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    memory = next(f for f in job.params["placement"]["filters"] if f["name"] == "memory")
    assert memory["removed"] == {host_a.name: "has 0 MiB left"}
    assert job.params["placement"]["chosen"] == host_b.name
    assert f"Placed on {host_b.name}" in job.log
    assert vm.status == VMStatus.STOPPED
    assert str(vm.uuid) in {d.uuid for d in get_driver(host_b.uri).list_domains()}
    assert str(vm.uuid) not in {d.uuid for d in get_driver(host_a.uri).list_domains()}
    assert host_loads()[host_b.pk].memory_mib == 64
