"""VM leases on libvirt's test driver: default leases from group policy, extensions within and beyond
policy, reminders once each with a moving clock, expiry stops then deletes after the grace period,
administrators' override. The clock is the `now` given to lease_pass (and the VM's own expires_at)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone

from portal.exceptions import PermissionDenied, ValidationFailed
from portal.hypervisor import PowerState, get_driver
from portal.models import AuditEvent, Job
from quotas.models import Quota
from vms import leases, services
from vms.choices import VMStatus
from vms.models import VM, LeaseNotice, LeasePolicy

pytestmark = pytest.mark.django_db(transaction=True)


def create(user, name="web-1", **kw):
    kw.setdefault("vcpus", 1)
    kw.setdefault("memory_mib", 128)
    kw.setdefault("disk_gib", 1)
    return services.vm_create(actor=user, via="cli", name=name, **kw).vm


@pytest.fixture
def team(alice):
    group = Group.objects.create(name="class")
    alice.groups.add(group)
    Quota.objects.create(group=group, max_vms=5, max_vcpus=5, max_memory_mib=2048, max_disk_gib=10)
    LeasePolicy.objects.create(group=group, default_days=5, max_days=10, max_extension_days=7, max_total_days=20,
                               grace_days=2, delete_expired=True)
    return group


def close(a, b, seconds=120):
    return abs((a - b).total_seconds()) < seconds


def test_site_default_is_no_lease_and_group_policy_gives_its_default(test_host, alice, team):
    personal = create(alice, name="mine")
    assert personal.expires_at is None
    vm = create(alice, name="lab-1", group=team)
    assert close(vm.expires_at, timezone.now() + timedelta(days=5))
    audit = AuditEvent.objects.get(action="vm.create", target_id=str(vm.pk))
    assert audit.data["expires_at"] == vm.expires_at.isoformat()


def test_a_default_never_goes_beyond_the_maximum(test_host, alice, team, settings):
    """A group's default may meet a shorter maximum (the site's, field by field): the new VM gets the maximum,
    not a lease its owner could not have asked for. The admin refuses such a policy in one row."""
    LeasePolicy.objects.filter(group=team).update(default_days=None, max_days=None, max_total_days=None)
    settings.LEASE_DEFAULT_DAYS, settings.LEASE_MAX_DAYS = 20, 10
    vm = create(alice, name="lab-1", group=team)
    assert close(vm.expires_at, timezone.now() + timedelta(days=10))
    LeasePolicy.objects.filter(group=team).update(default_days=0, max_days=None, max_total_days=4)
    assert close(create(alice, name="lab-2", group=team).expires_at, timezone.now() + timedelta(days=4))
    policy = LeasePolicy(group=Group.objects.create(name="other"), default_days=20, max_days=10)
    with pytest.raises(DjangoValidationError, match="cannot be longer than the maximum"):
        policy.full_clean()


def test_site_setting_gives_a_default_lease(test_host, alice, settings):
    settings.LEASE_DEFAULT_DAYS = 3
    vm = create(alice)
    assert close(vm.expires_at, timezone.now() + timedelta(days=3))
    assert create(alice, name="keep", lease_days=0).expires_at is None  # no limits on the site: none allowed


def test_create_beyond_policy_is_refused_and_nothing_is_created(test_host, alice, team):
    with pytest.raises(ValidationFailed, match="at most 10 days from now") as caught:
        create(alice, name="lab-1", group=team, lease_days="30d")
    assert caught.value.fields.get("field", "lease_days") == "lease_days" or "lease_days" in str(caught.value.errors)
    with pytest.raises(ValidationFailed, match="must have a lease"):
        create(alice, name="lab-1", group=team, lease_days="none")
    assert not VM.objects.filter(name="lab-1").exists()
    vm = create(alice, name="lab-1", group=team, lease_days="8d")
    assert close(vm.expires_at, timezone.now() + timedelta(days=8))


def test_admin_creates_beyond_policy(test_host, alice, admin_user, team):
    vm = services.vm_create(actor=admin_user, via="api", name="long", owner=alice, group=team, vcpus=1,
                            memory_mib=128, disk_gib=1, lease_days=0).vm
    assert vm.expires_at is None


def test_extend_within_and_beyond_policy(test_host, alice, team):
    vm = create(alice, name="lab-1", group=team)  # 5 days
    start = vm.expires_at
    vm = leases.vm_lease_extend(actor=alice, via="web", vm=vm.pk, days=5)
    assert vm.expires_at == start + timedelta(days=5)  # 10 days from now: the longest lease
    with pytest.raises(ValidationFailed, match="at most 10 days from now"):
        leases.vm_lease_extend(actor=alice, via="web", vm=vm.pk, days=1)
    with pytest.raises(ValidationFailed, match="must end in the future"):
        leases.vm_lease_extend(actor=alice, via="web", vm=vm.pk, until="2001-01-01")
    denied = AuditEvent.objects.filter(action="vm.lease.extend", outcome="denied", target_id=str(vm.pk))
    assert denied.count() == 2
    done = AuditEvent.objects.get(action="vm.lease.extend", outcome="succeeded", target_id=str(vm.pk))
    assert done.actor == alice and done.via == "web" and "now ends" in done.message


def test_one_extension_adds_at_most_max_extension_days(test_host, alice, team):
    LeasePolicy.objects.filter(group=team).update(default_days=1, max_days=30)
    vm = create(alice, name="lab-1", group=team)
    with pytest.raises(ValidationFailed, match="One extension in group class adds at most 7 days"):
        leases.vm_lease_extend(actor=alice, via="api", vm=vm.pk, days=8)
    vm = leases.vm_lease_extend(actor=alice, via="api", vm=vm.pk, days=7)
    assert close(vm.expires_at, timezone.now() + timedelta(days=8))


def test_max_total_counts_from_creation(test_host, alice, team):
    LeasePolicy.objects.filter(group=team).update(max_days=30, max_extension_days=None)
    vm = create(alice, name="lab-1", group=team)
    VM.objects.filter(pk=vm.pk).update(created_at=timezone.now() - timedelta(days=18))
    with pytest.raises(ValidationFailed, match="live at most 20 days from their creation"):
        leases.vm_lease_extend(actor=alice, via="api", vm=vm.pk, days=3)


def test_admin_sets_any_expiry_or_removes_it_and_owners_cannot(test_host, alice, admin_user, team):
    vm = create(alice, name="lab-1", group=team)
    vm = leases.vm_lease_extend(actor=admin_user, via="admin", vm=vm.pk, days=300)
    assert close(vm.expires_at, timezone.now() + timedelta(days=305))
    with pytest.raises(PermissionDenied, match="Only administrators"):
        leases.vm_lease_set(actor=alice, via="web", vm=vm.pk, expires_at=None)
    vm = leases.vm_lease_set(actor=admin_user, via="web", vm=vm.pk, expires_at=None)
    assert VM.objects.get(pk=vm.pk).expires_at is None
    assert AuditEvent.objects.filter(action="vm.lease.set", actor=admin_user, message__contains="removed").exists()


def test_others_cannot_extend(test_host, alice, bob, team):
    vm = create(alice, name="lab-1", group=team)
    with pytest.raises(Exception, match="not found"):
        leases.vm_lease_extend(actor=bob, via="api", vm=vm.pk, days=1)


def test_reminders_are_sent_once_each_at_their_time(test_host, alice, settings):
    settings.LEASE_REMINDER_DAYS = [3, 1]
    heard = []

    def listener(sender, *, vm, expires_at, days_before, **kw):
        heard.append((vm.pk, days_before))

    leases.lease_reminder.connect(listener)
    try:
        vm = create(alice, lease_days=10)
        end = vm.expires_at
        for days_left in (9, 5, 3.5):
            leases.lease_pass(now=end - timedelta(days=days_left))
        assert heard == []
        leases.lease_pass(now=end - timedelta(days=2.9))
        leases.lease_pass(now=end - timedelta(days=2.5))
        assert heard == [(vm.pk, 3)]
        leases.lease_pass(now=end - timedelta(hours=23))
        leases.lease_pass(now=end - timedelta(hours=2))
        assert heard == [(vm.pk, 3), (vm.pk, 1)]
        assert AuditEvent.objects.filter(action="vm.lease.reminder", target_id=str(vm.pk)).count() == 2
        # An extension is a new lease end: its reminders come again.
        leases.vm_lease_extend(actor=alice, via="web", vm=vm.pk, until=end + timedelta(days=2))
        leases.lease_pass(now=end + timedelta(hours=1))  # 47 h left: the 3-day one
        assert heard[-1] == (vm.pk, 3) and len(heard) == 3
    finally:
        leases.lease_reminder.disconnect(listener)


def test_a_clock_that_jumps_past_both_reminders_says_the_urgent_one_once(test_host, alice, settings):
    settings.LEASE_REMINDER_DAYS = [3, 1]
    heard = []
    leases.lease_reminder.connect(lambda sender, **kw: heard.append(kw["days_before"]), weak=False,
                                  dispatch_uid="test-jump")
    try:
        vm = create(alice, lease_days=10)
        leases.lease_pass(now=vm.expires_at - timedelta(hours=5))
        leases.lease_pass(now=vm.expires_at - timedelta(hours=4))
        assert heard == [1]
        assert set(LeaseNotice.objects.filter(vm=vm).values_list("days_before", flat=True)) == {1, 3}
    finally:
        leases.lease_reminder.disconnect(dispatch_uid="test-jump")


def test_expiry_stops_then_deletes_after_the_grace_period(test_host, alice, team):
    driver = get_driver("test:///default")
    vm = create(alice, name="lab-1", group=team)
    assert VM.objects.get(pk=vm.pk).status == VMStatus.RUNNING
    told = []
    leases.lease_expired.connect(lambda sender, **kw: told.append(kw["what"]), weak=False, dispatch_uid="test-exp")
    try:
        before = leases.lease_pass(now=vm.expires_at - timedelta(minutes=1))
        assert before["stopped"] == 0 and VM.objects.get(pk=vm.pk).status == VMStatus.RUNNING
        counts = leases.lease_pass(now=vm.expires_at + timedelta(minutes=1))
        assert counts["stopped"] == 1
        vm.refresh_from_db()
        assert vm.status == VMStatus.STOPPED
        assert driver.domain_info(str(vm.uuid)).state == PowerState.SHUTOFF
        stop = AuditEvent.objects.get(action="vm.lease.expired", target_id=str(vm.pk))
        assert stop.actor is None and stop.via == "system" and stop.job.kind == "vm.stop"
        assert told == ["stopped"]
        # Within the grace period (2 days) nothing more happens, and nothing is said twice.
        leases.lease_pass(now=vm.expires_at + timedelta(days=1))
        assert VM.objects.get(pk=vm.pk).status == VMStatus.STOPPED and told == ["stopped"]
        counts = leases.lease_pass(now=vm.expires_at + timedelta(days=2, minutes=1))
        assert counts["deleted"] == 1
        assert VM.objects.get(pk=vm.pk).status == VMStatus.DELETED
        assert not driver.domain_exists(str(vm.uuid))
        assert AuditEvent.objects.filter(action="vm.lease.deleted", via="system", target_id=str(vm.pk)).exists()
        assert told == ["stopped", "deleted"]
    finally:
        leases.lease_expired.disconnect(dispatch_uid="test-exp")


def test_by_default_expired_vms_are_only_stopped(test_host, alice, settings):
    settings.LEASE_GRACE_DAYS = 1
    vm = create(alice, lease_days=2)
    leases.lease_pass(now=vm.expires_at + timedelta(minutes=1))
    leases.lease_pass(now=vm.expires_at + timedelta(days=30))
    vm.refresh_from_db()
    assert vm.status == VMStatus.STOPPED
    assert not AuditEvent.objects.filter(action="vm.lease.deleted").exists()


def test_a_stop_the_guest_ignored_is_followed_by_force_off(test_host, alice):
    """The pass's first stop job failed (the guest ignored ACPI): the next turn forces it off."""
    vm = create(alice, lease_days=1)
    now = vm.expires_at + timedelta(minutes=1)
    VM.objects.filter(pk=vm.pk).update(lease_stopped_at=timezone.now() - timedelta(minutes=1))
    # The record of that failed stop (its job ran and failed; the VM kept running).
    Job.objects.create(kind="vm.stop", via="system", target_type="vm", target_id=str(vm.pk), status="failed",
                       error="did not power off")
    counts = leases.lease_pass(now=now + timedelta(minutes=5))
    assert counts["forced"] == 1
    assert VM.objects.get(pk=vm.pk).status == VMStatus.STOPPED
    assert "did not shut down" in AuditEvent.objects.filter(action="vm.lease.expired").latest("id").message


def test_extending_an_expired_vm_keeps_it(test_host, alice, team, settings):
    vm = create(alice, name="lab-1", group=team)
    leases.lease_pass(now=vm.expires_at + timedelta(minutes=1))
    vm = leases.vm_lease_extend(actor=alice, via="web", vm=vm.pk, days=3)
    assert vm.expires_at > timezone.now() + timedelta(days=2) and vm.lease_stopped_at is None
    leases.lease_pass(now=timezone.now() + timedelta(days=1))
    assert VM.objects.get(pk=vm.pk).status == VMStatus.STOPPED  # stays stopped, not deleted


def test_lease_pass_is_registered_as_housekeeping():
    from cluster.housekeeping import _chores

    assert _chores["vms.leases"] is leases.lease_pass
