"""VM services on libvirt's test driver: rules, quota, state machine, audit, and nothing left behind."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth.models import Group

from portal.exceptions import InvalidState, NotFound, PermissionDenied, QuotaExceeded, ValidationFailed
from portal.hypervisor import PowerState, get_driver
from portal.models import AuditEvent, Job
from quotas.selectors import quota_usage
from vms import selectors, services
from vms.choices import VMStatus
from vms.models import VM

pytestmark = pytest.mark.django_db(transaction=True)


def create(user, name="web-1", **kw):
    kw.setdefault("vcpus", 1)
    kw.setdefault("memory_mib", 128)
    kw.setdefault("disk_gib", 1)
    return services.vm_create(actor=user, via="cli", name=name, **kw)


def domain_state(vm):
    return get_driver("test:///default").domain_info(str(vm.uuid)).state


def volumes_in_pool():
    return {v.name for v in get_driver("test:///default").list_volumes(pool=settings.STORAGE_POOL)}


def test_create_defines_and_starts_a_domain_with_a_disk(test_host, alice):
    result = create(alice)
    vm = VM.objects.get(pk=result.vm.pk)
    assert vm.status == VMStatus.RUNNING
    assert Job.objects.get(pk=result.job.pk).status == "succeeded"
    assert domain_state(vm) == PowerState.RUNNING
    assert f"{vm.domain_name}-disk0.qcow2" in volumes_in_pool()
    actions = list(AuditEvent.objects.filter(target_id=str(vm.pk)).values_list("action", "via"))
    assert ("vm.create", "cli") in actions and ("vm.created", "cli") in actions


def test_create_with_flavor_by_name(test_host, alice):
    from vms.models import Flavor

    Flavor.objects.create(name="small", vcpus=1, memory_mib=256, disk_gib=2)
    vm = create(alice, flavor="small", vcpus=None, memory_mib=None, disk_gib=None).vm
    assert (vm.vcpus, vm.memory_mib, vm.disk_gib) == (1, 256, 2)


@pytest.mark.parametrize("name, message", [
    ("", "Name is required"),
    ("Web", "Invalid name"),
    ("a<b", "Invalid name"),
    ("a&b", "Invalid name"),
    ("it's", "Invalid name"),
    ("-web", "Invalid name"),
    ("x" * 64, "too long"),
])
def test_bad_names_are_refused_and_nothing_is_created(test_host, alice, name, message):
    before = len(get_driver("test:///default").list_domains())
    with pytest.raises(ValidationFailed, match=message) as exc:
        create(alice, name=name)
    assert "name" in exc.value.errors
    assert VM.objects.count() == 0
    assert len(get_driver("test:///default").list_domains()) == before


@pytest.mark.parametrize("field, value, message", [
    ("vcpus", 0, "between 1 and"),
    ("vcpus", "two", "whole number"),
    ("vcpus", True, "whole number"),
    ("memory_mib", 10**9, "between 64 and"),
    ("disk_gib", -1, "between 1 and"),
])
def test_bad_sizes_are_refused(test_host, alice, field, value, message):
    with pytest.raises(ValidationFailed, match=message) as exc:
        create(alice, **{field: value})
    assert field in exc.value.errors
    assert VM.objects.count() == 0


def test_unknown_image_and_flavor_are_refused(test_host, alice):
    with pytest.raises(ValidationFailed, match="Unknown image 'nope'"):
        create(alice, image="nope")
    with pytest.raises(ValidationFailed, match="Unknown flavor 'huge'"):
        create(alice, flavor="huge")
    assert VM.objects.count() == 0


def test_duplicate_name_per_owner_is_refused_but_other_owner_may_use_it(test_host, alice, bob):
    create(alice, name="db")
    with pytest.raises(ValidationFailed, match="already have a VM named 'db'"):
        create(alice, name="db")
    create(bob, name="db")


def test_quota_counts_vms_and_resources(test_host, alice):
    for i in range(3):
        create(alice, name=f"vm-{i}")
    with pytest.raises(QuotaExceeded) as exc:
        create(alice, name="vm-4")
    assert exc.value.fields == {"resource": "VMs", "requested": 1, "limit": 3, "in_use": 3}
    assert VM.objects.filter(owner=alice).count() == 3


def test_quota_for_memory_reports_the_numbers(test_host, alice):
    with pytest.raises(QuotaExceeded, match="Memory: requested 4096 MiB, 0 MiB of 2048 MiB in use"):
        create(alice, memory_mib=4096)


def test_deleting_frees_quota_and_the_name(test_host, alice):
    """A full quota refuses a fourth VM; deleting one gives its share back and frees its name."""
    vms = [create(alice, name=f"vm-{i}").vm for i in range(3)]
    with pytest.raises(QuotaExceeded, match="VMs: requested 1, 3 of 3 in use"):
        create(alice, name="vm-3")
    services.vm_delete(actor=alice, via="cli", vm=vms[0])
    assert VM.objects.get(pk=vms[0].pk).status == VMStatus.DELETED
    usage = {u.resource: u.used for u in quota_usage(user=alice)}
    assert usage["vms"] == 2
    again = create(alice, name="vm-0").vm
    again.refresh_from_db()
    assert again.pk != vms[0].pk and again.name == "vm-0" and again.status == VMStatus.RUNNING


def test_group_vms_use_the_group_quota_and_are_visible_to_members(test_host, alice, bob, make_user):
    team = Group.objects.create(name="team")
    alice.groups.add(team)
    bob.groups.add(team)
    from quotas.models import Quota

    Quota.objects.create(group=team, max_vms=1, max_vcpus=2, max_memory_mib=512, max_disk_gib=5)
    vm = create(alice, name="shared", group=team).vm
    assert selectors.vm_get(user=bob, vm_id=vm.pk) == vm
    with pytest.raises(QuotaExceeded, match="VMs"):
        create(bob, name="shared-2", group=team)
    create(bob, name="personal")  # personal quota is separate
    carol = make_user("carol")
    with pytest.raises(PermissionDenied, match="not a member"):
        create(carol, name="x", group=team)


def test_other_users_vm_is_not_found_for_every_action(test_host, alice, bob):
    vm = create(alice).vm
    with pytest.raises(NotFound):
        selectors.vm_get(user=bob, vm_id=vm.pk)
    for action in services.VM_ACTIONS:
        with pytest.raises(NotFound):
            services.vm_action(actor=bob, via="api", vm=vm.pk, action=action)
    with pytest.raises(NotFound):
        services.vm_delete(actor=bob, via="api", vm=vm.pk)
    assert VM.objects.get(pk=vm.pk).status == VMStatus.RUNNING


def test_admin_sees_every_vm(test_host, alice, admin_user):
    vm = create(alice).vm
    assert vm in selectors.vm_list(user=admin_user)


def test_state_machine_no_ops_and_clear_refusals(test_host, alice):
    vm = create(alice).vm
    result = services.vm_start(actor=alice, via="cli", vm=vm)
    assert result.job is None and "already running" in result.message
    services.vm_stop(actor=alice, via="cli", vm=vm)
    vm.refresh_from_db()
    assert vm.status == VMStatus.STOPPED and domain_state(vm) == PowerState.SHUTOFF
    with pytest.raises(InvalidState, match="already stopped"):
        services.vm_stop(actor=alice, via="cli", vm=vm)
    with pytest.raises(InvalidState, match="start it instead"):
        services.vm_reboot(actor=alice, via="cli", vm=vm)
    services.vm_start(actor=alice, via="cli", vm=vm)
    services.vm_pause(actor=alice, via="cli", vm=vm)
    vm.refresh_from_db()
    assert vm.status == VMStatus.PAUSED and domain_state(vm) == PowerState.PAUSED
    with pytest.raises(InvalidState, match="paused: resume it first"):
        services.vm_stop(actor=alice, via="cli", vm=vm)
    services.vm_resume(actor=alice, via="cli", vm=vm)
    services.vm_force_off(actor=alice, via="cli", vm=vm)
    vm.refresh_from_db()
    assert vm.status == VMStatus.STOPPED
    denied = AuditEvent.objects.filter(action="vm.stop", outcome="denied").count()
    assert denied == 2


def test_unknown_action_is_a_validation_error(test_host, alice):
    vm = create(alice).vm
    with pytest.raises(ValidationFailed, match="Unknown action 'explode'"):
        services.vm_action(actor=alice, via="api", vm=vm, action="explode")


def test_delete_removes_domain_and_disks(test_host, alice):
    vm = create(alice).vm
    disk = f"{vm.domain_name}-disk0.qcow2"
    services.vm_delete(actor=alice, via="cli", vm=vm)
    vm.refresh_from_db()
    assert vm.status == VMStatus.DELETED
    assert not get_driver("test:///default").domain_exists(str(vm.uuid))
    assert disk not in volumes_in_pool()
    assert vm.volumes.count() == 0
    with pytest.raises(NotFound):
        selectors.vm_get(user=alice, vm_id=vm.pk)


def test_delete_asks_for_the_name_when_confirmation_is_given(test_host, alice):
    vm = create(alice).vm
    with pytest.raises(ValidationFailed, match="Type the VM's name"):
        services.vm_delete(actor=alice, via="web", vm=vm, confirm_name="wrong")
    assert VM.objects.get(pk=vm.pk).status == VMStatus.RUNNING


def test_rename_updates_domain_title(test_host, alice):
    vm = create(alice).vm
    services.vm_update(actor=alice, via="api", vm=vm, name="web-2", description="front & back")
    info = get_driver("test:///default").domain_info(str(vm.uuid))
    assert info.title == "web-2"
    with pytest.raises(ValidationFailed):
        services.vm_update(actor=alice, via="api", vm=vm, name="Bad Name")


def test_failed_create_leaves_nothing_behind(test_host, alice):
    """A hypervisor failure in the act phase: no domain, no disk, quota released, job failed."""
    from quotas.selectors import quota_usage
    from storage.models import StoragePool

    StoragePool.objects.filter(host=test_host).update(name="gone-pool")
    result = create(alice)
    job = Job.objects.get(pk=result.job.pk)
    vm = VM.objects.get(pk=result.vm.pk)
    assert job.status == "failed" and job.error == "A storage pool of this VM is missing on its host."
    assert "gone-pool" in job.error_detail  # the host's own words: administrators only
    assert vm.status == VMStatus.DELETED and "Create failed" in vm.last_error
    assert vm.volumes.count() == 0
    assert not get_driver("test:///default").domain_exists(str(vm.uuid))
    assert {u.resource: u.used for u in quota_usage(user=alice)}["vms"] == 0
    assert AuditEvent.objects.filter(target_id=str(vm.pk), action="vm.create", outcome="failed").exists()


def test_create_on_an_unreachable_host_stays_visible_until_deleted(test_host, alice):
    """When even the clean-up cannot reach the host, the VM shows the error and Delete finishes it."""
    from cluster.models import Host

    real_uri = test_host.uri
    Host.objects.filter(pk=test_host.pk).update(uri="qemu+unix:///system?socket=/nonexistent/sock")
    result = create(alice)
    vm = VM.objects.get(pk=result.vm.pk)
    assert Job.objects.get(pk=result.job.pk).status == "failed"
    assert vm.status == VMStatus.ERROR and "Delete removes what is left" in vm.last_error
    Host.objects.filter(pk=test_host.pk).update(uri=real_uri)
    services.vm_delete(actor=alice, via="cli", vm=vm)
    vm.refresh_from_db()
    assert vm.status == VMStatus.DELETED and vm.volumes.count() == 0


def test_anonymous_actor_is_refused(test_host):
    from django.contrib.auth.models import AnonymousUser

    with pytest.raises(PermissionDenied):
        create(AnonymousUser())


def test_only_administrators_create_vms_for_others_and_on_the_owners_quota(test_host, alice, bob, admin_user):
    with pytest.raises(PermissionDenied, match="Only administrators create VMs for other users"):
        create(alice, name="for-bob", owner=bob)
    vm = create(admin_user, name="for-bob", owner=bob).vm
    assert vm.owner == bob
    usage = {u.resource: u.used for u in quota_usage(user=bob)}
    assert usage["vms"] == 1 and {u.resource: u.used for u in quota_usage(user=admin_user)}["vms"] == 0
    bob.is_active = False
    bob.save()
    with pytest.raises(ValidationFailed, match="bob is inactive"):
        create(admin_user, name="for-bob-2", owner=bob)
