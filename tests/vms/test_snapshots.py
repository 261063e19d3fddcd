"""Snapshots through the services on libvirt's test driver: rules, jobs, audit, and libvirt's own view."""

from __future__ import annotations

import pytest
from django.test import override_settings

from portal.exceptions import InvalidState, NotFound, ValidationFailed
from portal.hypervisor import PowerState, get_driver
from portal.models import AuditEvent, Job
from vms import services
from vms.choices import SnapshotStatus, VMStatus
from vms.models import VM, Snapshot

pytestmark = pytest.mark.django_db(transaction=True)


def make_vm(user, name="web-1"):
    return services.vm_create(actor=user, via="cli", name=name, vcpus=1, memory_mib=128, disk_gib=1).vm


def libvirt_snapshots(vm):
    return {s.name: s for s in get_driver("test:///default").list_snapshots(str(vm.uuid))}


def job_ok(job):
    job = Job.objects.get(pk=job.pk)
    assert job.status == "succeeded", f"{job.kind}: {job.status} {job.error}"
    return job


def test_snapshot_of_a_running_vm_keeps_its_memory(test_host, alice):
    vm = make_vm(alice)
    snapshot, job, _ = services.snapshot_create(actor=alice, via="api", vm=vm, name="before-upgrade",
                                             description="a & b <c>")
    job_ok(job)
    snapshot.refresh_from_db()
    assert snapshot.status == SnapshotStatus.READY and snapshot.has_memory and snapshot.vm_state == "running"
    assert snapshot.taken_at is not None
    seen = libvirt_snapshots(vm)["before-upgrade"]
    assert seen.has_memory and seen.state == PowerState.RUNNING and seen.description == "a & b <c>"
    actions = set(AuditEvent.objects.filter(target_id=str(vm.pk)).values_list("action", "via"))
    assert {("vm.snapshot.create", "api"), ("vm.snapshot.created", "api")} <= actions


def test_snapshot_of_a_stopped_vm_holds_the_disks_only_and_gets_a_default_name(test_host, alice):
    vm = make_vm(alice)
    job_ok(services.vm_force_off(actor=alice, via="cli", vm=vm).job)
    snapshot, job, _ = services.snapshot_create(actor=alice, via="cli", vm=vm)
    job_ok(job)
    snapshot.refresh_from_db()
    assert snapshot.name.startswith("snap-") and not snapshot.has_memory and snapshot.vm_state == "stopped"
    assert not libvirt_snapshots(vm)[snapshot.name].has_memory


@pytest.mark.parametrize("name", ["-x", "a b", "a<b", "it's", "x" * 64, "a/b", "42"])
def test_bad_snapshot_names_are_refused_and_nothing_is_made(test_host, alice, name):
    vm = make_vm(alice)
    with pytest.raises(ValidationFailed) as err:
        services.snapshot_create(actor=alice, via="cli", vm=vm, name=name)
    assert "name" in err.value.errors
    assert not Snapshot.objects.exists() and libvirt_snapshots(vm) == {}


def test_duplicate_name_and_the_per_vm_limit_are_refused(test_host, alice):
    vm = make_vm(alice)
    job_ok(services.snapshot_create(actor=alice, via="cli", vm=vm, name="one")[1])
    with pytest.raises(ValidationFailed, match="already has a snapshot named 'one'"):
        services.snapshot_create(actor=alice, via="cli", vm=vm, name="one")
    with override_settings(SNAPSHOTS_PER_VM=1):
        with pytest.raises(InvalidState, match="at most 1"):
            services.snapshot_create(actor=alice, via="cli", vm=vm, name="two")
    assert list(vm.snapshots.values_list("name", flat=True)) == ["one"]


def test_revert_brings_back_the_running_vm_and_is_not_seen_as_drift(test_host, alice):
    vm = make_vm(alice)
    snapshot, job, _ = services.snapshot_create(actor=alice, via="cli", vm=vm, name="s1")
    job_ok(job)
    job_ok(services.vm_force_off(actor=alice, via="cli", vm=vm).job)
    assert get_driver("test:///default").domain_info(str(vm.uuid)).state == PowerState.SHUTOFF

    reverted, job, _ = services.snapshot_revert(actor=alice, via="web", vm=vm, snapshot="s1")
    job_ok(job)
    vm.refresh_from_db()
    assert vm.status == VMStatus.RUNNING
    assert get_driver("test:///default").domain_info(str(vm.uuid)).state == PowerState.RUNNING
    reverted.refresh_from_db()
    assert reverted.status == SnapshotStatus.READY and reverted.reverted_at is not None
    assert AuditEvent.objects.filter(target_id=str(vm.pk), action="vm.snapshot.reverted").exists()
    from cluster.services import host_sync

    host_sync(host=test_host)
    vm.refresh_from_db()
    assert vm.status == VMStatus.RUNNING
    assert not AuditEvent.objects.filter(target_id=str(vm.pk), action="vm.drift").exists()


def test_delete_removes_the_snapshot_from_libvirt_and_the_list(test_host, alice):
    vm = make_vm(alice)
    snapshot, job, _ = services.snapshot_create(actor=alice, via="cli", vm=vm, name="s1")
    job_ok(job)
    _, job, _ = services.snapshot_delete(actor=alice, via="cli", vm=vm, snapshot=snapshot.pk)
    job_ok(job)
    assert not Snapshot.objects.exists() and libvirt_snapshots(vm) == {}


def test_other_users_and_other_vms_snapshots_are_not_found(test_host, alice, bob):
    vm = make_vm(alice)
    other = make_vm(alice, name="web-2")
    snapshot, job, _ = services.snapshot_create(actor=alice, via="cli", vm=vm, name="s1")
    job_ok(job)
    for call in (services.snapshot_create, services.snapshot_revert, services.snapshot_delete):
        with pytest.raises(NotFound):
            call(actor=bob, via="api", vm=vm, **({} if call is services.snapshot_create else {"snapshot": "s1"}))
    with pytest.raises(NotFound):  # VM B's snapshot asked for through VM A
        services.snapshot_revert(actor=alice, via="api", vm=other, snapshot=snapshot.pk)
    with pytest.raises(NotFound):
        services.snapshot_delete(actor=alice, via="api", vm=vm, snapshot="nope")
    assert libvirt_snapshots(vm).keys() == {"s1"} and libvirt_snapshots(other) == {}


def test_one_snapshot_operation_at_a_time_and_power_actions_wait_for_it(test_host, alice):
    vm = make_vm(alice)
    Snapshot.objects.create(vm=vm, name="busy", status=SnapshotStatus.CREATING)
    with pytest.raises(InvalidState, match="snapshot busy is being taken"):
        services.snapshot_create(actor=alice, via="cli", vm=vm, name="s2")
    with pytest.raises(InvalidState, match="snapshot busy is being taken"):
        services.vm_stop(actor=alice, via="cli", vm=vm)
    with pytest.raises(InvalidState, match="snapshot busy is being taken"):
        services.vm_delete(actor=alice, via="cli", vm=vm)
    job_ok(services.vm_force_off(actor=alice, via="cli", vm=vm).job)  # the way out stays open


def test_snapshots_need_a_settled_vm(test_host, alice):
    vm = make_vm(alice)
    VM.objects.filter(pk=vm.pk).update(status=VMStatus.STARTING)
    with pytest.raises(InvalidState, match="busy"):
        services.snapshot_create(actor=alice, via="cli", vm=vm)


def test_failed_snapshot_leaves_no_row(test_host, alice):
    vm = make_vm(alice)
    get_driver("test:///default").undefine(str(vm.uuid))  # removed behind the portal's back
    snapshot, job, _ = services.snapshot_create(actor=alice, via="cli", vm=vm, name="s1")
    job = Job.objects.get(pk=job.pk)
    assert job.status == "failed"
    assert not Snapshot.objects.exists()
    assert AuditEvent.objects.filter(target_id=str(vm.pk), action="vm.snapshot.create", outcome="failed").exists()


def test_deleting_the_vm_removes_its_snapshots(test_host, alice):
    vm = make_vm(alice)
    job_ok(services.snapshot_create(actor=alice, via="cli", vm=vm, name="s1")[1])
    job_ok(services.vm_delete(actor=alice, via="cli", vm=vm).job)
    assert not Snapshot.objects.exists()
    assert not get_driver("test:///default").domain_exists(str(vm.uuid))


def test_reconcile_leaves_a_vm_being_reverted_to_its_job(test_host, alice):
    from cluster.services import host_sync

    vm = make_vm(alice)
    Snapshot.objects.create(vm=vm, name="s1", status=SnapshotStatus.REVERTING)
    get_driver("test:///default").destroy(str(vm.uuid))  # the revert restarts the domain
    host_sync(host=test_host)
    vm.refresh_from_db()
    assert vm.status == VMStatus.RUNNING and vm.power_state == "shutoff"  # recorded, not acted on
    assert not AuditEvent.objects.filter(target_id=str(vm.pk), action="vm.drift").exists()
    Snapshot.objects.filter(vm=vm).update(status=SnapshotStatus.READY)
    host_sync(host=test_host)
    vm.refresh_from_db()
    assert vm.status == VMStatus.STOPPED  # without a revert under way, the same is drift


def test_ids_and_names_never_mix_up(test_host, alice):
    vm = make_vm(alice)
    first = services.snapshot_create(actor=alice, via="cli", vm=vm, name="first")[0]
    second = services.snapshot_create(actor=alice, via="cli", vm=vm, name=f"v{first.pk}")[0]
    from vms.selectors import vm_snapshot_get

    assert vm_snapshot_get(vm=vm, key=str(first.pk)) == first  # digits: always an id
    assert vm_snapshot_get(vm=vm, key=first.pk) == first
    assert vm_snapshot_get(vm=vm, key=f"v{first.pk}") == second
    services.snapshot_delete(actor=alice, via="web", vm=vm, snapshot=first.pk)
    assert list(vm.snapshots.values_list("name", flat=True)) == [f"v{first.pk}"]


def test_snapshot_waits_for_a_queued_job_on_the_vm(test_host, alice):
    vm = make_vm(alice)
    Job.objects.create(kind="vm.pause", target_type="vm", target_id=str(vm.pk), target_name=vm.name,
                       status="pending", via="cli")
    with pytest.raises(InvalidState, match="a pause job is pending"):
        services.snapshot_create(actor=alice, via="cli", vm=vm)
    with pytest.raises(InvalidState, match="a pause job is pending"):
        services.snapshot_revert(actor=alice, via="cli", vm=vm, snapshot="x")
    assert not Snapshot.objects.exists()


def test_a_snapshot_of_that_name_made_outside_the_portal_is_neither_taken_over_nor_removed(test_host, alice):
    vm = make_vm(alice)
    driver = get_driver("test:///default")
    driver.snapshot_create(str(vm.uuid), name="handmade")  # as `virsh snapshot-create-as` would
    _, job, _ = services.snapshot_create(actor=alice, via="cli", vm=vm, name="handmade")
    job = Job.objects.get(pk=job.pk)
    assert job.status == "failed" and "exists on the host already (made outside the portal)" in job.error
    assert not Snapshot.objects.exists()
    assert "handmade" in libvirt_snapshots(vm)  # still there, untouched
