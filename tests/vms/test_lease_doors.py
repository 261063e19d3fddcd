"""VM leases through the REST API, the CLI, the web pages and the admin (libvirt's test driver)."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.utils import timezone

from portal.exceptions import PermissionDenied
from portal.models import AuditEvent
from quotas.models import Quota
from tests.support import api_client, web_client
from vms import leases
from vms.lease_policy import lease_policy_delete, lease_policy_save, lease_rules
from vms.models import VM, LeasePolicy
from vms.services import vm_create

pytestmark = pytest.mark.django_db(transaction=True)

SIZE = {"vcpus": 1, "memory_mib": 128, "disk_gib": 1}


@pytest.fixture
def team(alice):
    group = Group.objects.create(name="class")
    alice.groups.add(group)
    Quota.objects.create(group=group, max_vms=5, max_vcpus=5, max_memory_mib=2048, max_disk_gib=10)
    LeasePolicy.objects.create(group=group, default_days=2, max_days=10, max_extension_days=3)
    return group


def days_from_now(when, days):
    return abs((when - (timezone.now() + timedelta(days=days))).total_seconds()) < 120


def test_api_create_with_lease_extend_and_refusals(test_host, alice, admin_user, team):
    api = api_client(alice)
    response = api.post("/api/vms/", {"name": "lab-1", "group": "class", "lease_days": "4d", **SIZE}, format="json")
    assert response.status_code == 202, response.content
    vm = VM.objects.get(name="lab-1")
    assert days_from_now(vm.expires_at, 4)
    assert response.json()["vm"]["expires_at"] is not None

    response = api.post("/api/vms/", {"name": "lab-2", "group": "class", "lease_days": 30, **SIZE}, format="json")
    assert response.status_code == 400
    assert "at most 10 days from now" in response.json()["detail"]
    assert not VM.objects.filter(name="lab-2").exists()

    response = api.post(f"/api/vms/{vm.pk}/extend/", {"days": 2}, format="json")
    assert response.status_code == 200, response.content
    vm.refresh_from_db()
    assert days_from_now(vm.expires_at, 6)
    assert response.json()["expires_at"] == vm.expires_at.isoformat().replace("+00:00", "Z")

    response = api.post(f"/api/vms/{vm.pk}/extend/", {"days": 4}, format="json")
    assert response.status_code == 400 and "adds at most 3 days" in response.json()["detail"]
    response = api.post(f"/api/vms/{vm.pk}/extend/", {}, format="json")
    assert response.status_code == 400 and "Give either the days" in response.json()["detail"]
    response = api.post(f"/api/vms/{vm.pk}/extend/", {"until": None}, format="json")
    assert response.status_code == 403 and "Only administrators" in response.json()["detail"]

    admin = api_client(admin_user)
    until = (timezone.now() + timedelta(days=400)).replace(microsecond=0)
    response = admin.post(f"/api/vms/{vm.pk}/extend/", {"until": until.isoformat()}, format="json")
    assert response.status_code == 200, response.content
    vm.refresh_from_db()
    assert vm.expires_at == until
    response = admin.post(f"/api/vms/{vm.pk}/extend/", {"until": None}, format="json")
    assert response.status_code == 200 and response.json()["expires_at"] is None
    assert list(AuditEvent.objects.filter(target_id=str(vm.pk), action__startswith="vm.lease.")
                .values_list("action", "via", "outcome").order_by("id")) == [
        ("vm.lease.extend", "api", "succeeded"), ("vm.lease.extend", "api", "denied"),
        ("vm.lease.extend", "api", "succeeded"), ("vm.lease.set", "api", "succeeded")]


def test_api_far_or_impossible_lease_ends_are_400_not_500(test_host, alice, admin_user):
    """An end near year 9999 made every later extension overflow (500); an impossible date was a ValueError."""
    vm = vm_create(actor=alice, via="api", name="far-1", lease_days=2, **SIZE).vm
    admin = api_client(admin_user)
    for until in ("9999-12-31T23:59", "2300-01-01"):
        response = admin.post(f"/api/vms/{vm.pk}/extend/", {"until": until}, format="json")
        assert response.status_code == 400 and "within 36500 days" in response.json()["detail"], response.content
    response = admin.post(f"/api/vms/{vm.pk}/extend/", {"until": "2030-02-30"}, format="json")
    assert response.status_code == 400 and "Give a date" in response.json()["detail"]
    response = api_client(alice).post("/api/vms/", {"name": "far-2", "expires_at": "9999-12-31", **SIZE},
                                      format="json")
    assert response.status_code == 400 and not VM.objects.filter(name="far-2").exists()
    # An end already that far (set before ends were bounded): extending it is refused in words.
    VM.objects.filter(pk=vm.pk).update(expires_at=timezone.now().replace(year=9999, month=12, day=30))
    for client in (admin, api_client(alice)):
        response = client.post(f"/api/vms/{vm.pk}/extend/", {"days": 3}, format="json")
        assert response.status_code == 400 and "too far away" in response.json()["detail"], response.content
    assert admin.post(f"/api/vms/{vm.pk}/extend/", {"until": "2031-01-01"}, format="json").status_code == 200


def test_api_extend_of_someone_elses_vm_is_404(test_host, alice, bob):
    theirs = vm_create(actor=bob, via="api", name="b-1", lease_days=2, **SIZE).vm
    response = api_client(alice).post(f"/api/vms/{theirs.pk}/extend/", {"days": 1}, format="json")
    assert response.status_code == 404


def cli(*args: str) -> str:
    out = StringIO()
    call_command("vm", *args, stdout=out)
    return out.getvalue()


def test_cli_create_with_lease_and_extend(test_host, alice, admin_user, team):
    cli("--user", "alice", "create", "cli-1", "--lease", "3d", "--vcpus", "1", "--memory-mib", "128",
        "--disk-gib", "1")
    vm = VM.objects.get(name="cli-1")
    assert days_from_now(vm.expires_at, 3)
    out = cli("--user", "alice", "extend", "cli-1", "--days", "2")
    assert "The lease of cli-1 now ends" in out
    vm.refresh_from_db()
    assert days_from_now(vm.expires_at, 5)
    assert "expires_at" in cli("--user", "alice", "show", "cli-1")
    with pytest.raises(CommandError, match="Only administrators"):
        cli("--user", "alice", "extend", "cli-1", "--no-lease")
    assert "removed" in cli("--user", "root-admin", "extend", "cli-1", "--no-lease")
    assert VM.objects.get(pk=vm.pk).expires_at is None
    with pytest.raises(CommandError, match="A lease must end in the future"):
        cli("--user", "alice", "extend", "cli-1", "--until", "2001-01-01")


def test_web_create_extend_and_notices(test_host, alice, admin_user, team, settings):
    settings.LEASE_REMINDER_DAYS = [3, 1]
    web = web_client(alice)
    response = web.post("/vms/new/", {"name": "web-1", "flavor": "custom", "vcpus": "1", "memory_mib": "128",
                                      "disk_gib": "1", "group": "class", "lease_days": "20"})
    assert response.status_code == 400
    assert "at most 10 days from now" in response.content.decode()
    response = web.post("/vms/new/", {"name": "web-1", "flavor": "custom", "vcpus": "1", "memory_mib": "128",
                                      "disk_gib": "1", "group": "class"})
    assert response.status_code == 302, response.content[:500]
    vm = VM.objects.get(name="web-1")
    assert days_from_now(vm.expires_at, 2)  # the group's default
    page = web.get(f"/vms/{vm.pk}/").content.decode()
    assert "data-lease-notice" in page and "then it is stopped" in page and 'id="lease"' in page
    assert "The lease of" in web.get("/").content.decode()

    response = web.post(f"/vms/{vm.pk}/extend/", {"days": "3"}, follow=True)
    assert "now ends" in response.content.decode()
    vm.refresh_from_db()
    assert days_from_now(vm.expires_at, 5)
    assert "data-lease-notice" not in web.get(f"/vms/{vm.pk}/").content.decode()  # 5 days: no reminder yet
    response = web.post(f"/vms/{vm.pk}/extend/", {"days": "4"}, follow=True)
    assert "adds at most 3 days" in response.content.decode()
    response = web.post(f"/vms/{vm.pk}/extend/", {"remove": "1"}, follow=True)
    assert "Only administrators" in response.content.decode()

    admin = web_client(admin_user)
    assert "Remove lease" in admin.get(f"/vms/{vm.pk}/").content.decode()
    admin.post(f"/vms/{vm.pk}/extend/", {"set": "1", "until": "2031-02-03T10:00"})
    vm.refresh_from_db()
    assert timezone.localtime(vm.expires_at).strftime("%Y-%m-%d %H:%M") == "2031-02-03 10:00"
    admin.post(f"/vms/{vm.pk}/extend/", {"remove": "1"})
    assert VM.objects.get(pk=vm.pk).expires_at is None


def test_expired_vm_shows_its_notice(test_host, alice):
    vm = vm_create(actor=alice, via="web", name="old-1", lease_days=1, **SIZE).vm
    VM.objects.filter(pk=vm.pk).update(expires_at=timezone.now() - timedelta(hours=1))
    leases.lease_pass()
    page = web_client(alice).get(f"/vms/{vm.pk}/").content.decode()
    assert "it is stopped" in page and "Extend it" in page


def test_admin_edits_lease_policies_audited(admin_user, team):
    web = web_client(admin_user)
    policy = LeasePolicy.objects.get(group=team)
    response = web.post(f"/admin/vms/leasepolicy/{policy.pk}/change/", {
        "group": team.pk, "default_days": "1", "max_days": "5", "max_extension_days": "", "max_total_days": "",
        "grace_days": "", "delete_expired": "true"})
    assert response.status_code == 302, response.content[:800]
    policy.refresh_from_db()
    assert (policy.default_days, policy.max_days, policy.max_extension_days, policy.delete_expired) == (1, 5, None, True)
    rules = lease_rules(team)
    assert (rules.max_days, rules.max_extension_days, rules.source) == (5, 0, "group class")
    assert AuditEvent.objects.filter(action="lease_policy.change", actor=admin_user).exists()


def test_lease_policies_change_only_through_the_service(alice, admin_user, team):
    """The admin's door calls vms.lease_policy (trial of issue #14: it wrote the row itself); users are refused,
    deleting, one or several, is audited like a change."""
    policy = LeasePolicy.objects.get(group=team)
    policy.max_days = 1
    with pytest.raises(PermissionDenied):
        lease_policy_save(actor=alice, via="web", policy=policy)
    assert LeasePolicy.objects.get(group=team).max_days != 1
    web = web_client(admin_user)
    response = web.post("/admin/vms/leasepolicy/", {"action": "delete_selected", "_selected_action": [policy.pk],
                                                    "post": "yes"})
    assert response.status_code == 302 and not LeasePolicy.objects.filter(group=team).exists()
    assert AuditEvent.objects.filter(action="lease_policy.delete", actor=admin_user, target_id=str(policy.pk)).exists()
    with pytest.raises(PermissionDenied):
        lease_policy_delete(actor=alice, via="web", policy=policy)
