"""The VM side of the scheduler: what a VM asks of a host (vms.scheduling), and vm_create's placement in
its record phase (test:///default: the create job runs for real on the test driver)."""

from __future__ import annotations

import pytest

from cluster.models import Cluster, Host
from cluster.placement import host_loads
from cluster.scheduler import NoHostAvailable, propose_balancing
from portal.models import Job
from vms import services
from vms.choices import VMStatus
from vms.models import VM, AffinityGroup
from vms.scheduling import vm_request

pytestmark = pytest.mark.django_db


@pytest.fixture
def other_host(test_host):
    """A second, synthetic host in test_host's cluster (facts set by hand: never dialled when not chosen)."""
    return Host.objects.create(name="synthetic-b", uri="test:///synthetic/b", status="up", memory_mib=8192,
                               free_memory_mib=8192, cpus=4, cluster=test_host.cluster)


def _vm(owner, host, name, memory=512, status=VMStatus.RUNNING):
    return VM.objects.create(name=name, owner=owner, host=host, vcpus=1, memory_mib=memory, disk_gib=1, status=status)


def test_vm_request_carries_pinning_tags_and_affinity(test_host, other_host, alice):
    vm = _vm(alice, test_host, "web-1")
    peer = _vm(alice, other_host, "web-2")
    gone = _vm(alice, test_host, "web-3", status=VMStatus.DELETED)
    vm.pinned_hosts.add(other_host)
    VM.objects.filter(pk=vm.pk).update(required_tags=["ssd"])
    group = AffinityGroup.objects.create(name="web", positive=False, enforcing=True)
    group.vms.add(vm, peer, gone)
    request = vm_request(vm, for_migration=True)
    assert (request.vm_id, request.name, request.vcpus, request.memory_mib) == (vm.pk, "web-1", 1, 512)
    assert request.current_host_id == test_host.pk
    assert request.pinned_host_ids == {other_host.pk}
    assert request.required_tags == {"ssd"}
    (rule,) = request.affinity
    assert (rule.group, rule.positive, rule.enforcing, rule.host_ids) == ("web", False, True, {other_host.pk})
    assert request.allowed_host_ids is None
    assert vm_request(vm).current_host_id is None


def test_a_migrating_vm_counts_on_both_ends(test_host, other_host, alice):
    vm = _vm(alice, test_host, "moving", memory=1024, status=VMStatus.MIGRATING)
    Job.objects.create(kind="vm.migrate", target_type="vm", target_id=str(vm.pk), status="running",
                       params={"target_host_id": other_host.pk})
    loads = host_loads()
    assert loads[test_host.pk].memory_mib == 1024
    assert loads[other_host.pk].memory_mib == 1024


def test_balancing_honours_the_vms_own_constraints(test_host, other_host, alice):
    cluster = Cluster.objects.get(pk=test_host.cluster_id)
    Host.objects.filter(pk=test_host.pk).update(memory_mib=4096)
    vm = _vm(alice, test_host, "pinned", memory=3900)
    vm.pinned_hosts.add(test_host)
    assert propose_balancing(cluster=cluster) == []  # over-used, but the VM may run only there
    vm.pinned_hosts.clear()
    (move,) = propose_balancing(cluster=cluster)
    assert (move.vm_id, move.target_host_id) == (vm.pk, other_host.pk)
    Job.objects.create(kind="vm.migrate", target_type="vm", target_id=str(vm.pk), status="succeeded")
    assert propose_balancing(cluster=cluster) == []  # migrated a moment ago: no ping-pong


def test_vm_create_places_in_the_record_phase_and_explains_on_the_job(test_host, alice):
    result = services.vm_create(actor=alice, via="api", name="placed", vcpus=1, memory_mib=256, disk_gib=1,
                                start=False)
    assert result.vm.host == test_host
    job = Job.objects.get(pk=result.job.pk)
    placement = job.params["placement"]
    assert placement["chosen"] == "testhost"
    assert placement["request"] == {"vcpus": 1, "memory_mib": 256, "name": "placed"}
    assert placement["policy"] == "evenly_distributed"
    assert "Placed on testhost: least used" in job.log


def test_vm_create_refused_when_no_host_has_room(test_host, alice, admin_user):
    Host.objects.filter(pk=test_host.pk).update(memory_mib=1024)
    _vm(admin_user, test_host, "hog", memory=900)
    with pytest.raises(NoHostAvailable) as caught:
        services.vm_create(actor=alice, via="api", name="nofit", vcpus=1, memory_mib=256, disk_gib=1, start=False)
    assert str(caught.value) == "No host has 256 MiB free; ask an administrator."
    assert caught.value.hosts == "testhost has 124 MiB left"
    assert not VM.objects.filter(name="nofit").exists()  # the record phase rolled back (quota is counted from VMs)
    memory = next(f for f in caught.value.explanation["filters"] if f["name"] == "memory")
    assert memory["removed"] == {"testhost": "has 124 MiB left"}
