"""Creates that fail on their host for a host reason (issue #12): the recent_failures weight, and the
job's message when no other host can take the VM. The retry itself on real hosts is in
tests/vms/test_create_retry_qemu.py (the two-host harness)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from cluster.choices import HostStatus
from cluster.models import Cluster, Host
from cluster.scheduler import VMRequest, explain_text, schedule
from portal.models import AuditEvent, Job
from vms import services
from vms.choices import VMStatus
from vms.create_retry import recent_host_failures
from vms.models import VM


def _host(cluster: Cluster, name: str, memory_mib: int) -> Host:
    return Host.objects.create(name=name, uri=f"test:///nonexistent/{name}.xml", status=HostStatus.UP,
                               cluster=cluster, memory_mib=memory_mib, cpus=8)


def _failed_create(*hosts: Host, age_seconds: int = 0) -> Job:
    job = Job.objects.create(kind="vm.create", target_type="vm", target_id="0", status="failed",
                             params={"failed_hosts": [h.pk for h in hosts]})
    Job.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(seconds=age_seconds))
    return job


def test_hosts_with_recent_failed_creates_are_avoided_and_the_explanation_says_so(db):
    lab = Cluster.objects.create(name="lab")
    a = _host(lab, "a", memory_mib=16384)  # the emptiest: first choice without failures
    b = _host(lab, "b", memory_mib=8192)
    request = VMRequest(vcpus=1, memory_mib=1024, name="web")
    assert schedule(request=request, cluster=lab).host == a

    _failed_create(a)
    _failed_create(a, b, age_seconds=settings.HOST_FAILURE_WINDOW_SECONDS + 60)  # outside the window
    assert recent_host_failures(settings.HOST_FAILURE_WINDOW_SECONDS) == {a.pk: 1}
    placement = schedule(request=request, cluster=lab)
    assert placement.host == b
    weights = placement.explanation["weights"]
    assert weights["a"]["recent_failures"] == 50 and weights["b"]["recent_failures"] == 0
    assert placement.explanation["recent_failures"] == {"a": 1}
    assert "Recent failed creates (avoided): a 1." in explain_text(placement.explanation)

    # A host that is the only one left still takes the VM (a weight, not a filter).
    Host.objects.filter(pk=b.pk).update(enabled=False)
    assert schedule(request=request, cluster=lab).host == a


@pytest.mark.django_db(transaction=True)
def test_a_create_that_fails_for_a_host_reason_with_no_other_host_names_the_hosts_tried(test_host, alice):
    """The test driver's pool is stopped: the disk cannot be made (a host reason). The only other host is
    in maintenance, so the job fails saying so, naming the host tried."""
    Host.objects.create(name="spare", uri="test:///nonexistent/spare.xml", status=HostStatus.MAINTENANCE,
                        memory_mib=8192, cpus=8)
    from portal.hypervisor import get_driver

    gateway = get_driver(test_host.uri)  # the test driver's pool, stopped and started through the gateway
    gateway._call("stop pool", lambda conn: conn.storagePoolLookupByName(settings.STORAGE_POOL).destroy())
    try:
        result = services.vm_create(actor=alice, via="api", name="no-room", vcpus=1, memory_mib=128, disk_gib=1,
                                    networks=[])
    finally:
        gateway._call("start pool", lambda conn: conn.storagePoolLookupByName(settings.STORAGE_POOL).create(0))
    job = Job.objects.get(pk=result.job.pk)
    assert job.status == "failed", (job.status, job.error, job.traceback)
    assert "no other host can take it" in job.error, job.error
    assert "spare is in maintenance" in job.error_detail, job.error_detail  # which hosts and why: admins only
    assert f"Hosts tried: {test_host.name}." in job.error, job.error
    assert job.params["failed_hosts"] == [test_host.pk]
    # The clean-up ran while the pool was still stopped: the VM stays visible (error) with its disk rows,
    # and Delete removes what is left once the pool is back.
    vm = VM.objects.get(pk=result.vm.pk)
    assert vm.status == VMStatus.ERROR and "Delete removes what is left" in vm.last_error, vm.last_error
    services.vm_delete(actor=alice, via="api", vm=vm)
    vm.refresh_from_db()
    assert vm.status == VMStatus.DELETED and vm.volumes.count() == 0
    assert AuditEvent.objects.filter(action="vm.create", target_id=str(vm.pk), outcome="failed").exists()
    # The failed host now counts for the weight.
    assert recent_host_failures(600) == {test_host.pk: 1}
