"""Slack error replies: one formatter for every PortalError, [Request more] read from QuotaExceeded
itself (quotas.services.quota_reserve fills in the whole request), never a host's internals for
non-administrators."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group

from chatops import formatting as f
from portal.exceptions import (
    HypervisorError,
    HypervisorUnavailable,
    OperationFailed,
    PortalError,
    QuotaExceeded,
    ValidationFailed,
)
from quotas.models import QuotaRequest
from vms.models import VM
from vms.services import vm_create

from .conftest import reply_of, reply_text

pytestmark = pytest.mark.django_db

INTERNALS = "qemu+ssh://root@10.0.0.5/system: Failed to connect socket to '/var/run/libvirt/libvirt-sock'"


def _all_subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_all_subclasses(sub)]
    return found


# --- QuotaExceeded carries the request -------------------------------------------------------------

def test_quota_exceeded_carries_the_whole_request(alice, test_host, small_flavor):
    with pytest.raises(QuotaExceeded) as exc:
        vm_create(actor=alice, via="web", name="big", vcpus=8, memory_mib=256, disk_gib=2)
    assert exc.value.requested_resources == {"vms": 1, "vcpus": 8, "memory_mib": 256, "disk_gib": 2}
    assert exc.value.group_id is None
    assert exc.value.as_dict() == {"code": "quota_exceeded", "detail": exc.value.message, "resource": "vCPUs",
                                   "requested": 8, "limit": 4, "in_use": 0}  # the API body is unchanged


def test_quota_exceeded_of_a_team_names_the_group(alice, test_host, small_flavor):
    team = Group.objects.create(name="team-a")
    alice.groups.add(team)
    from quotas.models import Quota

    Quota.objects.create(group=team, max_vms=0, max_vcpus=4, max_memory_mib=2048, max_disk_gib=20)
    with pytest.raises(QuotaExceeded) as exc:
        vm_create(actor=alice, via="web", name="team-vm", flavor="small", group="team-a")
    assert exc.value.group_id == team.pk
    assert exc.value.requested_resources == {"vms": 1, "vcpus": 1, "memory_mib": 128, "disk_gib": 1}


def test_request_more_asks_for_what_the_refused_create_asked(slack, alice, link, test_host, small_flavor):
    """Sizes the old door re-derived wrongly (explicit sizes over a flavor) come from the exception."""
    link(alice, "UALICE")
    body = reply_of(slack.command("create big --flavor small --cpus 6 --memory 512"))
    assert "Quota exceeded for vCPUs: requested 6, 0 of 4 in use." in body["text"]
    button = body["blocks"][1]["elements"][0]
    assert button["text"]["text"] == "Request more"
    assert json.loads(button["value"]) == {"vms": 1, "vcpus": 6, "memory_mib": 512, "disk_gib": 1}
    slack.click("quota_request", button["value"], ephemeral=True)
    request = QuotaRequest.objects.get()
    assert (request.max_vms, request.max_vcpus, request.max_memory_mib, request.max_disk_gib) == (None, 6, None, None)


def test_request_more_for_a_team_vm_asks_for_the_teams_quota(slack, alice, link, test_host, small_flavor):
    team = Group.objects.create(name="team-a")
    alice.groups.add(team)
    from quotas.models import Quota

    Quota.objects.create(group=team, max_vms=0, max_vcpus=4, max_memory_mib=2048, max_disk_gib=20)
    link(alice, "UALICE")
    body = reply_of(slack.command("create t1 --flavor small --group team-a"))
    button = body["blocks"][1]["elements"][0]
    assert json.loads(button["value"])["group"] == team.pk
    slack.click("quota_request", button["value"], ephemeral=True)
    request = QuotaRequest.objects.get()
    assert (request.group, request.max_vms) == (team, 1)


@pytest.mark.django_db(transaction=True)
def test_growing_a_disk_over_quota_offers_request_more_for_the_disk_only(slack, alice, link, test_host,
                                                                          small_flavor):
    link(alice, "UALICE")
    for n in range(3):  # the VM quota is full too: a grow must not ask for one more VM
        slack.command(f"create web-{n} --flavor small")
    assert VM.objects.filter(status="running").count() == 3
    body = reply_of(slack.command("grow-disk web-0 30"))
    assert "Quota exceeded for Disk: requested 29 GiB, 3 GiB of 20 GiB in use." in body["text"]
    value = body["blocks"][1]["elements"][0]["value"]
    assert json.loads(value) == {"vms": 0, "vcpus": 0, "memory_mib": 0, "disk_gib": 29}
    slack.click("quota_request", value, ephemeral=True)
    request = QuotaRequest.objects.get()
    assert (request.max_vms, request.max_vcpus, request.max_disk_gib) == (None, None, 32)
    assert request.reason.startswith("To grow a VM by")


# --- one formatter ---------------------------------------------------------------------------------

def test_every_portal_error_gets_a_reply_without_host_internals(alice):
    for cls in [PortalError, *_all_subclasses(PortalError)]:
        if cls is QuotaExceeded:
            continue
        exc = cls({"name": [INTERNALS]}) if issubclass(cls, ValidationFailed) else cls(INTERNALS)
        reply = f.error_reply(exc, user=alice)
        assert reply.text.startswith(":warning: "), cls
        if isinstance(exc, HypervisorError):
            assert "qemu+ssh" not in reply.text and "libvirt-sock" not in reply.text, cls


def test_administrators_get_the_hypervisors_own_words(admin_user, alice):
    exc = OperationFailed(INTERNALS)
    assert "libvirt-sock" in f.error_reply(exc, user=admin_user).text
    assert f.error_reply(exc, user=alice).text == (
        ":warning: The hypervisor could not do this. Try again; if it keeps failing, "
        "an administrator can see the details in the job log.")


def test_hypervisor_errors_from_a_command_and_a_click_are_plain_words(slack, alice, link, test_host,
                                                                     monkeypatch):
    link(alice, "UALICE")
    vm = VM.objects.create(name="web-1", owner=alice, host=test_host, vcpus=1, memory_mib=128, disk_gib=1,
                           status="stopped")

    def unreachable(**kwargs):
        raise HypervisorUnavailable(INTERNALS)

    monkeypatch.setattr("chatops.handlers.vm_action", unreachable)
    text = reply_text(slack.command("start web-1"))
    assert text == ":warning: The VM's host cannot be reached right now. Try again in a minute."
    slack.click("vm_start", str(vm.pk))
    [answer] = slack.fake.responses()
    assert answer.text == ":warning: The VM's host cannot be reached right now. Try again in a minute."
