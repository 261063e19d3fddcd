"""Host health on libvirt's test driver (fast): heartbeat states, VMs of an unreachable host unknown and
their actions refused, the truth restored when the host answers; jobs never dial an unreachable host.
The same on real hosts (a frozen libvirtd): tests/cluster/test_host_health_qemu.py."""

from __future__ import annotations

import pytest

from cluster.models import Host
from cluster.services import host_sync
from portal.choices import JobStatus
from portal.exceptions import Conflict
from portal.jobs import run_job
from portal.models import AuditEvent, Job
from vms import services
from vms.choices import VMStatus
from vms.models import VM

pytestmark = pytest.mark.django_db

BAD_URI = "qemu+unix:///system?socket=/nonexistent/sock"


@pytest.fixture
def vm(test_host, alice, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):  # the create job runs
        return services.vm_create(actor=alice, via="cli", name="web", vcpus=1, memory_mib=128, disk_gib=1).vm


def _unplug(host: Host) -> str:
    good = host.uri
    Host.objects.filter(pk=host.pk).update(uri=BAD_URI)
    host.uri = BAD_URI
    return good


def test_vms_of_an_unreachable_host_are_unknown_refused_and_restored(test_host, vm, alice):
    assert VM.objects.get(pk=vm.pk).status == VMStatus.RUNNING
    good = _unplug(test_host)
    host_sync(host=test_host)
    assert VM.objects.get(pk=vm.pk).status == VMStatus.RUNNING  # one failed heartbeat: not yet
    assert host_sync(host=test_host)["status"] == "non_responsive"
    v = VM.objects.get(pk=vm.pk)
    assert (v.status, v.known_status) == (VMStatus.UNKNOWN, VMStatus.RUNNING)
    for act in (lambda: services.vm_stop(actor=alice, via="api", vm=vm),
                lambda: services.vm_delete(actor=alice, via="api", vm=vm),
                lambda: services.snapshot_create(actor=alice, via="api", vm=vm, name="s1"),
                lambda: services.vm_grow_disk(actor=alice, via="api", vm=vm, disk_gib=2)):
        with pytest.raises(Conflict, match="Host testhost is not responding; the VM's state is unknown"):
            act()
    assert not Job.objects.filter(target_id=str(vm.pk), kind__in=("vm.stop", "vm.delete")).exists()

    Host.objects.filter(pk=test_host.pk).update(uri=good)
    test_host.uri = good
    result = host_sync(host=test_host)
    assert result["status"] == "up"
    test_host.refresh_from_db()
    assert (test_host.failures, test_host.last_error) == (0, "")
    v = VM.objects.get(pk=vm.pk)
    assert (v.status, v.known_status) == (VMStatus.RUNNING, "")
    actions = list(AuditEvent.objects.filter(target_id=str(test_host.pk), action__startswith="host.")
                   .values_list("action", flat=True))
    assert "host.non_responsive" in actions and "host.up" in actions


def test_an_api_action_on_a_vm_of_an_unreachable_host_is_a_409(test_host, vm, alice, client_for):
    _unplug(test_host)
    host_sync(host=test_host)
    host_sync(host=test_host)
    from django.urls import reverse

    response = client_for(alice).post(reverse("api-vm-actions", args=[vm.pk]), {"action": "stop"}, format="json")
    assert response.status_code == 409, response.content
    assert "not responding" in response.json()["detail"]


def test_a_queued_job_for_an_unreachable_host_fails_at_once_without_dialling(test_host, vm, alice,
                                                                            django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):  # queued, not run: the host dies meanwhile
        job = services.vm_stop(actor=alice, via="cli", vm=vm).job
    _unplug(test_host)
    Host.objects.filter(pk=test_host.pk).update(status="non_responsive")
    assert run_job(job.pk) == JobStatus.FAILED
    job.refresh_from_db()
    assert "not responding" in job.error
    v = VM.objects.get(pk=vm.pk)
    assert (v.status, v.known_status) == (VMStatus.UNKNOWN, VMStatus.RUNNING)  # no dial in the clean-up
