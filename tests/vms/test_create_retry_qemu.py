"""A create that fails on its host for a host reason goes to the other host (issue #12), on the real
two-host harness (namespace libvirtd daemons, real QEMU).

Host a is misconfigured: its display address is one no interface of host a has, so QEMU cannot bind the
VM's VNC display and libvirt refuses to start the domain (after the disk was made and the domain defined
there). The create cleans host a up, moves to host b, and the next create avoids host a (the
recent_failures weight)."""

from __future__ import annotations

import subprocess

import pytest
from django.conf import settings

from cluster.models import Host
from portal.hypervisor import get_driver
from portal.models import AuditEvent, Job
from storage.services import image_register
from vms import services
from vms.choices import VMStatus
from vms.models import VM

pytestmark = [pytest.mark.qemu, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]


def _volumes(hv) -> set[str]:
    out = hv.virsh("vol-list", "--pool", settings.STORAGE_POOL).stdout
    rows = [line.split() for line in out.splitlines() if line.strip() and not line.lstrip().startswith("---")]
    return {row[0] for row in rows if row[0] != "Name"}


def _domains(hv) -> str:
    return hv.virsh("list", "--all", "--uuid").stdout


def test_a_create_failing_on_host_a_runs_on_host_b_leaves_nothing_on_a_and_the_next_avoids_a(
        cluster_hosts, ns_pair, alice, tmp_path):
    host_a, host_b = cluster_hosts
    hv_a, _hv_b = ns_pair
    src = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), "16M"], check=True)
    image = image_register(actor=None, host=host_a, name="test-firmware-retry", title="Firmware only",
                           source_path=str(src), fmt="qcow2", replace=True)
    Host.objects.filter(pk=host_a.pk).update(display_address="10.99.7.250")  # not an address of host a
    # The two namespace hosts are the same machine: equal load is a tie the scheduler may break either way.
    # Host b reports half the memory, so the first placement surely picks host a (the one that fails).
    Host.objects.filter(pk=host_b.pk).update(memory_mib=max(1, host_b.memory_mib // 2))

    result = services.vm_create(actor=alice, via="cli", name="retry-1", image=image, vcpus=1, memory_mib=64,
                                disk_gib=1, networks=[])
    job = Job.objects.get(pk=result.job.pk)
    vm = VM.objects.select_related("host").get(pk=result.vm.pk)
    assert job.log.splitlines()[0].split(" ", 1)[1].startswith(f"Placed on {host_a.name}"), job.log
    assert job.status == "succeeded", (job.status, job.error, job.log)
    assert vm.host == host_b and vm.status == VMStatus.RUNNING, (vm.host, vm.status, vm.last_error)
    assert f"Host {host_a.name} failed: " in job.log and f"retrying on {host_b.name}" in job.log, job.log
    assert job.params["failed_hosts"] == [host_a.pk]
    assert job.params["placement"]["chosen"] == host_b.name
    retry = AuditEvent.objects.get(action="vm.create.retry", target_id=str(vm.pk))
    assert host_a.name in retry.message and host_b.name in retry.message and retry.job_id == job.pk

    # Nothing of the VM is left on host a; its disk is in host b's pool, and it runs there.
    assert str(vm.uuid) not in _domains(hv_a)
    assert not any(name.startswith(vm.domain_name) for name in _volumes(hv_a)), _volumes(hv_a)
    assert {v.pool.host_id for v in vm.volumes.select_related("pool")} == {host_b.pk}
    assert get_driver(host_b.uri).domain_info(str(vm.uuid)).state.is_active

    # Host a works again, but it failed a create within the window: the next create lands on host b first.
    Host.objects.filter(pk=host_a.pk).update(display_address="")
    result2 = services.vm_create(actor=alice, via="cli", name="retry-2", image=image, vcpus=1, memory_mib=64,
                                 disk_gib=1, networks=[])
    job2 = Job.objects.get(pk=result2.job.pk)
    vm2 = VM.objects.get(pk=result2.vm.pk)
    placement = job2.params["placement"]
    assert placement["chosen"] == host_b.name and placement["recent_failures"] == {host_a.name: 1}, placement
    assert placement["weights"][host_a.name]["recent_failures"] == 50
    assert vm2.host_id == host_b.pk and vm2.status == VMStatus.RUNNING and "failed_hosts" not in job2.params
    for v in (vm, vm2):
        services.vm_delete(actor=alice, via="cli", vm=v)
