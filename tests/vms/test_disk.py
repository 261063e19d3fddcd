"""Growing a VM's disk: rules and quota on libvirt's test driver (which cannot grow disks, so the
services refuse there); the real growth, live and offline, is proven on qemu:///system."""

from __future__ import annotations

import pytest

from portal.exceptions import Conflict, InvalidState, NotFound, QuotaExceeded, ValidationFailed
from portal.hypervisor import get_driver
from portal.models import AuditEvent, Job
from vms import services
from vms.choices import SnapshotStatus, VMStatus
from vms.models import VM, Snapshot

pytestmark = pytest.mark.django_db(transaction=True)


def make_vm(user, name="web-1", disk_gib=1, **kw):
    return services.vm_create(actor=user, via="cli", name=name, vcpus=1, memory_mib=128, disk_gib=disk_gib, **kw).vm


def test_grow_rules_are_checked_in_order_and_nothing_changes(test_host, alice, bob):
    vm = make_vm(alice, disk_gib=2)
    assert services.vm_grow_disk(actor=alice, via="api", vm=vm, disk_gib=2).job is None  # same size: a no-op
    with pytest.raises(ValidationFailed, match="A disk can only grow: web-1's is 2 GiB"):
        services.vm_grow_disk(actor=alice, via="api", vm=vm, disk_gib=1)
    with pytest.raises(ValidationFailed, match="Disk must be a whole number"):
        services.vm_grow_disk(actor=alice, via="api", vm=vm, disk_gib="ten")
    with pytest.raises(ValidationFailed, match="between 1 and"):
        services.vm_grow_disk(actor=alice, via="api", vm=vm, disk_gib=10**6)
    with pytest.raises(NotFound):
        services.vm_grow_disk(actor=bob, via="api", vm=vm, disk_gib=3)
    with pytest.raises(QuotaExceeded, match="Quota exceeded for Disk"):  # alice's default quota: 40 GiB
        services.vm_grow_disk(actor=alice, via="api", vm=vm, disk_gib=41)
    Snapshot.objects.create(vm=vm, name="busy", status=SnapshotStatus.CREATING)
    with pytest.raises(InvalidState, match="snapshot busy is being taken"):
        services.vm_grow_disk(actor=alice, via="api", vm=vm, disk_gib=3)
    Snapshot.objects.all().delete()
    with pytest.raises(Conflict, match="cannot grow disks"):  # libvirt's test driver has no blockResize
        services.vm_grow_disk(actor=alice, via="api", vm=vm, disk_gib=3)
    vm.refresh_from_db()
    assert vm.disk_gib == 2 and vm.volumes.get().capacity_gib == 2
    assert not Job.objects.filter(kind="vm.disk.grow").exists()


def test_a_vm_in_transition_cannot_grow(test_host, alice):
    vm = make_vm(alice)
    VM.objects.filter(pk=vm.pk).update(status=VMStatus.STOPPING)
    with pytest.raises(InvalidState, match="busy"):
        services.vm_grow_disk(actor=alice, via="api", vm=vm, disk_gib=2)


@pytest.mark.qemu
def test_disk_grows_offline_and_live_and_a_failure_gives_the_quota_back(qemu_host, firmware_image, alice):
    vm = make_vm(alice, name="grow-1", disk_gib=1)
    driver = get_driver(qemu_host.uri)
    volume = vm.volumes.get()

    def capacity_gib() -> float:
        return driver.volume_info(pool=volume.pool.name, name=volume.name).capacity_bytes / 1024**3

    result = services.vm_grow_disk(actor=alice, via="web", vm=vm, disk_gib=2)  # live: the VM runs
    assert Job.objects.get(pk=result.job.pk).status == "succeeded"
    assert capacity_gib() == 2
    services.vm_force_off(actor=alice, via="cli", vm=vm)
    result = services.vm_grow_disk(actor=alice, via="web", vm=vm, disk_gib=3)  # offline, by the volume
    assert Job.objects.get(pk=result.job.pk).status == "succeeded"
    assert capacity_gib() == 3
    vm.refresh_from_db()
    assert vm.disk_gib == 3 and vm.volumes.get().capacity_gib == 3
    assert AuditEvent.objects.filter(target_id=str(vm.pk), action="vm.disk.grown").count() == 2

    # A volume the host does not have (as if removed behind the portal's back): the job fails...
    type(volume).objects.filter(pk=volume.pk).update(name="vmptest-missing.qcow2")
    result = services.vm_grow_disk(actor=alice, via="web", vm=vm, disk_gib=4)
    job = Job.objects.get(pk=result.job.pk)
    assert job.status == "failed"
    vm.refresh_from_db()
    assert vm.disk_gib == 3  # ...and the VM (and so the quota) keeps the old size
    assert capacity_gib() == 3
    type(volume).objects.filter(pk=volume.pk).update(name=volume.name)
    services.vm_delete(actor=alice, via="cli", vm=vm)


def test_grow_through_the_api_web_and_cli_reach_the_service(test_host, alice, client):
    """Each door hands its input to vm_grow_disk and shows its answer (here: the test driver's refusal)."""
    from io import StringIO

    from django.core.management import CommandError, call_command
    from rest_framework.test import APIClient

    vm = make_vm(alice, disk_gib=1)
    api = APIClient()
    api.force_authenticate(alice)
    refused = api.post(f"/api/vms/{vm.pk}/grow_disk/", {"disk_gib": 2}, format="json")
    assert refused.status_code == 409 and "cannot grow disks" in refused.json()["detail"]
    bad = api.post(f"/api/vms/{vm.pk}/grow_disk/", {"disk_gib": "x"}, format="json")
    assert bad.status_code == 400 and "disk_gib" in bad.json()["errors"]
    assert api.post(f"/api/vms/{vm.pk}/grow_disk/", {"disk_gib": 1}, format="json").status_code == 200  # no-op

    client.force_login(alice)
    page = client.post(f"/vms/{vm.pk}/disk/", {"disk_gib": "0"}, follow=True)
    assert "Disk must be between 1 and" in page.content.decode()
    assert f'action="/vms/{vm.pk}/disk/"' in client.get(f"/vms/{vm.pk}/").content.decode()
    with pytest.raises(CommandError, match="Disk must be between 1 and"):
        call_command("vm", "--user", "alice", "grow-disk", vm.name, "0", stdout=StringIO())
    with pytest.raises(CommandError, match="cannot grow disks"):
        call_command("vm", "--user", "alice", "grow-disk", vm.name, "2", stdout=StringIO())
    assert VM.objects.get(pk=vm.pk).disk_gib == 1
