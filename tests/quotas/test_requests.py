"""Quota requests: the services (quotas.services) and their web pages under /quotas/requests/."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from portal.exceptions import Conflict, InvalidState, NotFound, PermissionDenied, ValidationFailed
from portal.models import AuditEvent
from quotas.models import Quota, QuotaRequest
from quotas.selectors import quota_request_list, quota_request_summary
from quotas.services import (
    quota_request_approve,
    quota_request_cancel,
    quota_request_create,
    quota_request_deny,
    quota_request_for_size,
)

pytestmark = pytest.mark.django_db


def test_create_records_only_increases_and_audits(alice):
    request = quota_request_create(actor=alice, via="web", max_vms=5, max_vcpus=2, max_memory_mib=4096,
                                   reason="load test")
    assert (request.max_vms, request.max_vcpus, request.max_memory_mib, request.max_disk_gib) == (5, None, 4096, None)
    assert request.previous == {"max_vms": 3, "max_vcpus": 4, "max_memory_mib": 2048, "max_disk_gib": 20,
                                "max_backup_gib": 40}
    assert quota_request_summary(request) == "VMs 3 → 5, Memory 2048 → 4096 MiB"
    event = AuditEvent.objects.get(action="quota_request.create")
    assert event.outcome == "requested" and "load test" in event.message


def test_asking_for_nothing_more_is_refused(alice):
    with pytest.raises(ValidationFailed) as exc:
        quota_request_create(actor=alice, via="web", max_vms=3, max_vcpus=1)
    assert "Ask for more than the current quota (VMs 3, vCPUs 4, Memory 2048, Disk 20, Backup space 40)." == exc.value.message


@pytest.mark.parametrize("value", ["lots", -1, True, 10**9])
def test_limits_must_be_sane_whole_numbers(alice, value):
    with pytest.raises(ValidationFailed):
        quota_request_create(actor=alice, via="web", max_vms=value)


def test_one_pending_request_per_quota(alice):
    first = quota_request_create(actor=alice, via="web", max_vms=4)
    with pytest.raises(Conflict) as exc:
        quota_request_create(actor=alice, via="slack", max_vms=5)
    assert f"#{first.pk}" in exc.value.message


def test_for_size_asks_for_just_enough(alice):
    request = quota_request_for_size(actor=alice, via="slack", vcpus=6, memory_mib=512, disk_gib=4)
    assert (request.max_vms, request.max_vcpus, request.max_memory_mib, request.max_disk_gib) == (None, 6, None, None)


def test_group_requests_need_membership(alice):
    team = Group.objects.create(name="team-a")
    with pytest.raises(PermissionDenied):
        quota_request_create(actor=alice, via="web", group=team, max_vms=9)
    alice.groups.add(team)
    assert quota_request_create(actor=alice, via="web", group=team, max_vms=9).group == team


def test_approve_raises_limits_never_lowers_and_closes_once(alice, admin_user):
    request = quota_request_create(actor=alice, via="web", max_vms=5, max_disk_gib=30)
    Quota.objects.filter(user=alice).update(max_disk_gib=50)  # raised meanwhile by hand
    quota_request_approve(actor=admin_user, via="admin", request=request.pk, note="ok")
    quota = Quota.objects.get(user=alice)
    assert (quota.max_vms, quota.max_disk_gib) == (5, 50)
    request.refresh_from_db()
    assert (request.status, request.decided_by, request.decided_via, request.decision_note) == (
        "approved", admin_user, "admin", "ok")
    assert AuditEvent.objects.filter(action="quota.update", actor=admin_user).exists()
    with pytest.raises(InvalidState) as exc:
        quota_request_deny(actor=admin_user, via="admin", request=request.pk)
    assert exc.value.message == f"Quota request #{request.pk} was already approved by root-admin."


def test_only_admins_decide(alice, bob):
    request = quota_request_create(actor=alice, via="web", max_vms=5)
    for decide in (quota_request_approve, quota_request_deny):
        with pytest.raises(PermissionDenied) as exc:
            decide(actor=bob, via="web", request=request.pk)
        assert exc.value.message == "Only administrators can decide quota requests."
    with pytest.raises(PermissionDenied):
        quota_request_approve(actor=alice, via="web", request=request.pk)


def test_deny_keeps_the_quota(alice, admin_user):
    request = quota_request_create(actor=alice, via="web", max_vms=5)
    quota_request_deny(actor=admin_user, via="web", request=request.pk, note="not now")
    assert Quota.objects.get(user=alice).max_vms == 3
    assert AuditEvent.objects.get(action="quota_request.deny").outcome == "denied"


def test_requester_can_withdraw_but_not_others(alice, bob):
    request = quota_request_create(actor=alice, via="web", max_vms=5)
    with pytest.raises(NotFound):
        quota_request_cancel(actor=bob, via="web", request=request.pk)
    assert quota_request_cancel(actor=alice, via="web", request=request.pk).status == "cancelled"


def test_visibility(alice, bob, admin_user):
    mine = quota_request_create(actor=alice, via="web", max_vms=5)
    quota_request_create(actor=bob, via="web", max_vms=5)
    assert list(quota_request_list(user=alice)) == [mine]
    assert quota_request_list(user=admin_user).count() == 2


# --- web pages ----------------------------------------------------------------------------------------

def test_web_page_shows_usage_and_sends_a_request(client, alice):
    client.force_login(alice)
    page = client.get("/quotas/requests/")
    assert page.status_code == 200 and "Ask for more" in page.content.decode()
    done = client.post("/quotas/requests/", {"max_vms": "6", "reason": "demo day"}, follow=True)
    request = QuotaRequest.objects.get()
    assert (request.max_vms, request.via, request.reason) == (6, "web", "demo day")
    assert f"Quota request #{request.pk} was sent to the administrators." in done.content.decode()
    assert "VMs 3 → 6" in done.content.decode()


def test_web_form_shows_the_services_message(client, alice):
    client.force_login(alice)
    page = client.post("/quotas/requests/", {"max_vms": "2"})
    assert page.status_code == 400
    assert "Ask for more than the current quota" in page.content.decode()
    assert not QuotaRequest.objects.exists()


def test_admin_approves_on_the_web_page(client, alice, admin_user):
    request = quota_request_create(actor=alice, via="web", max_vms=5)
    client.force_login(admin_user)
    assert "Approve" in client.get("/quotas/requests/").content.decode()
    page = client.post(f"/quotas/requests/{request.pk}/approve/", follow=True)
    assert f"Quota request #{request.pk} approved." in page.content.decode()
    assert Quota.objects.get(user=alice).max_vms == 5


def test_non_admin_cannot_approve_on_the_web(client, alice, bob):
    request = quota_request_create(actor=alice, via="web", max_vms=5)
    client.force_login(alice)
    page = client.post(f"/quotas/requests/{request.pk}/approve/", follow=True)
    assert "Only administrators can decide quota requests." in page.content.decode()
    request.refresh_from_db()
    assert request.status == "pending"


def test_old_slack_address_of_the_request_page_redirects(client, alice):
    """Links to the page sent before it moved (/slack/quota-requests/) still reach it."""
    client.force_login(alice)
    response = client.get("/slack/quota-requests/")
    assert response.status_code == 301 and response["Location"] == "/quotas/requests/"
