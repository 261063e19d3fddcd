"""Host writes from the admin go through cluster.services (audited), and refuse what they must."""

from __future__ import annotations

import pytest
from django.urls import reverse

from cluster.models import Host
from cluster.services import host_delete, host_set_enabled
from portal.choices import Via
from portal.exceptions import Conflict, PermissionDenied
from portal.models import AuditEvent
from vms.models import VM
from vms.services import vm_create

pytestmark = pytest.mark.django_db


def _change(admin_client, host: Host, **changes):
    data = {"name": host.name, "enabled": "on" if host.enabled else "", "domain_type": host.domain_type,
            **changes}
    data = {k: v for k, v in data.items() if v != ""}
    return admin_client.post(reverse("admin:cluster_host_change", args=[host.pk]), data, follow=True)


def test_disabling_a_host_in_the_admin_is_audited_through_the_service(admin_client, test_host):
    response = _change(admin_client, test_host, enabled="")
    assert response.status_code == 200
    test_host.refresh_from_db()
    assert test_host.enabled is False
    event = AuditEvent.objects.get(action="host.disable", target_id=str(test_host.pk))
    assert event.via == Via.ADMIN and "Disabled testhost for new VMs" in event.message
    _change(admin_client, test_host, enabled="on")
    test_host.refresh_from_db()
    assert test_host.enabled is True and AuditEvent.objects.filter(action="host.enable").exists()


def test_only_administrators_enable_or_disable_hosts(test_host, alice):
    with pytest.raises(PermissionDenied, match="Only administrators enable or disable hosts"):
        host_set_enabled(actor=alice, via=Via.API, host=test_host, enabled=False)
    test_host.refresh_from_db()
    assert test_host.enabled is True


def test_a_host_with_vms_is_not_deleted_and_says_why(admin_user, test_host, alice):
    vm_create(actor=alice, via=Via.WEB, name="web-1", vcpus=1, memory_mib=128, disk_gib=1)
    with pytest.raises(Conflict, match="1 VM\\(s\\) still live on it"):
        host_delete(actor=admin_user, via=Via.ADMIN, host=test_host)
    assert Host.objects.filter(pk=test_host.pk).exists()


def test_deleting_an_empty_host_in_the_admin_goes_through_the_service(admin_client, admin_user):
    from cluster.services import host_register

    spare = host_register(actor=admin_user, via=Via.CLI, name="spare", uri="qemu+unix:///system?socket=/nope")
    response = admin_client.post(reverse("admin:cluster_host_delete", args=[spare.pk]), {"post": "yes"},
                                 follow=True)
    assert response.status_code == 200
    assert not Host.objects.filter(pk=spare.pk).exists()
    event = AuditEvent.objects.get(action="host.delete", target_name="spare")
    assert event.via == Via.ADMIN and event.actor == admin_user


@pytest.mark.django_db(transaction=True)  # the jobs run on commit
def test_pause_and_resume_are_admin_actions_through_the_service(admin_client, test_host, alice):
    vm = VM.objects.get(pk=vm_create(actor=alice, via=Via.WEB, name="web-1", vcpus=1, memory_mib=128,
                                     disk_gib=1).vm.pk)
    url = reverse("admin:vms_vm_changelist")
    page = admin_client.post(url, {"action": "pause", "_selected_action": [str(vm.pk)]}, follow=True)
    vm.refresh_from_db()
    assert vm.status == "paused" and "Pausing web-1" in page.content.decode()
    page = admin_client.post(url, {"action": "resume", "_selected_action": [str(vm.pk)]}, follow=True)
    vm.refresh_from_db()
    assert vm.status == "running"
    assert AuditEvent.objects.filter(action="vm.pause", via=Via.ADMIN, target_id=str(vm.pk)).exists()
    assert AuditEvent.objects.filter(action="vm.resume", via=Via.ADMIN, target_id=str(vm.pk)).exists()
