"""Errors per audience: ordinary users read plain words on every door, administrators also get the
hypervisor's own text; libvirt URIs and socket paths never reach anyone else."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from django.urls import reverse

from cluster.models import Host
from portal.exceptions import (
    DomainNotFound,
    HypervisorUnavailable,
    NotFound,
    OperationFailed,
    PortalError,
    QuotaExceeded,
    scrub,
    user_message,
)
from portal.models import Job
from tests.support import api_client, web_client
from vms import services
from vms.choices import VMStatus
from vms.models import VM

pytestmark = pytest.mark.django_db(transaction=True)

# libvirt's remote driver on a socket that does not exist: a real "cannot connect" from libvirt.
BAD_URI = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
INTERNALS = ("qemu+unix", "qemu:///", "/nonexistent", "libvirt-sock", "socket=")


def _assert_clean(text: str) -> None:
    for internal in INTERNALS:
        assert internal not in text, f"{internal!r} leaked in {text[:500]!r}"


@pytest.fixture
def failed_reboot(test_host, alice):
    """alice's VM whose host became unreachable, and the failed reboot job."""
    vm = services.vm_create(actor=alice, via="api", name="web-1", vcpus=1, memory_mib=128, disk_gib=1).vm
    Host.objects.filter(pk=test_host.pk).update(uri=BAD_URI)
    vm = VM.objects.select_related("host").get(pk=vm.pk)
    job = services.vm_reboot(actor=alice, via="api", vm=vm).job
    return VM.objects.get(pk=vm.pk), Job.objects.get(pk=job.pk)


def test_an_unreachable_host_fails_the_job_in_plain_words_and_keeps_libvirts_text_for_admins(failed_reboot):
    vm, job = failed_reboot
    assert job.status == "failed"
    assert job.error == HypervisorUnavailable.plain
    assert BAD_URI in job.error_detail and "Failed to connect socket" in job.error_detail
    assert vm.status == VMStatus.RUNNING  # restored to what it was: the host could not be asked
    assert vm.last_error == HypervisorUnavailable.plain


def test_the_owner_never_sees_the_uri_or_socket_in_the_api_web_slack_or_live_events(failed_reboot, alice):
    from chatops.formatting import job_result_reply
    from portal.jobs import job_event

    vm, job = failed_reboot
    api = api_client(alice)
    job_json = api.get(f"/api/jobs/{job.pk}/").json()
    vm_json = api.get(f"/api/vms/{vm.pk}/").json()
    assert job_json["error"] == HypervisorUnavailable.plain and job_json["error_detail"] == ""
    assert vm_json["last_error"] == HypervisorUnavailable.plain
    for body in (job_json, vm_json, api.get("/api/jobs/").json(), api.get(f"/api/vms/{vm.pk}/jobs/").json()):
        _assert_clean(json.dumps(body))

    web = web_client(alice)
    for url in (reverse("jobs:detail", args=[job.pk]), reverse("jobs:list"), reverse("vms:detail", args=[vm.pk]),
                reverse("vms:status")):
        page = web.get(url)
        assert page.status_code == 200
        _assert_clean(page.content.decode())
    assert HypervisorUnavailable.plain.replace("'", "&#x27;") in web.get(reverse("jobs:detail", args=[job.pk])).content.decode()

    _assert_clean(json.dumps(job_event(job)))  # what the websocket pushes to the owner
    _assert_clean(job_result_reply(job, vm).text)  # what Slack tells the owner


def test_administrators_see_the_hypervisors_words_on_the_job_page_and_in_the_api(failed_reboot, admin_user):
    _vm, job = failed_reboot
    body = api_client(admin_user).get(f"/api/jobs/{job.pk}/").json()
    assert body["error"] == HypervisorUnavailable.plain
    assert BAD_URI in body["error_detail"]
    page = web_client(admin_user).get(reverse("jobs:detail", args=[job.pk])).content.decode()
    assert "Hypervisor detail" in page and "/nonexistent/libvirt-sock" in page
    admin_page = web_client(admin_user).get(reverse("admin:portal_job_change", args=[job.pk])).content.decode()
    assert "/nonexistent/libvirt-sock" in admin_page


# --- the one wording: portal.exceptions.user_message ------------------------------------------------

def test_user_message_scrubs_uris_and_sockets_from_any_error_for_non_staff(alice, admin_user):
    raw = PortalError("virDomainCreate failed on qemu+ssh://root@node-7/system via "
                      "/var/run/libvirt/libvirt-sock-ro and test:///default")
    assert user_message(raw, user=alice) == "virDomainCreate failed on the host via the host and the host"
    assert user_message(raw) == user_message(raw, user=alice)  # no user: the ordinary users' words
    assert user_message(raw, user=admin_user) == raw.message
    assert scrub("qemu:///system is down") == "the host is down"


def test_user_message_gives_plain_words_and_admins_the_detail_too(alice, admin_user):
    err = OperationFailed(detail="start 1234: internal error: qemu unexpectedly closed the monitor")
    assert user_message(err, user=alice) == OperationFailed.plain
    assert user_message(err, user=admin_user) == f"{OperationFailed.plain} ({err.detail})"
    # Made outside the gateway with libvirt's text as its message: users still get plain words.
    legacy = DomainNotFound("Domain not found: no domain with matching uuid 'x' on qemu:///system")
    assert user_message(legacy, user=alice) == DomainNotFound.plain
    assert user_message(NotFound("VM 7 not found."), user=alice) == "VM 7 not found."
    quota = QuotaExceeded(resource="vms", requested=1, limit=1, in_use=1)
    assert user_message(quota, user=alice).endswith("ask an administrator for a larger quota.")


def test_the_api_answers_hypervisor_errors_plainly_and_adds_the_detail_for_staff(alice, admin_user):
    from portal.api import exception_handler

    err = HypervisorUnavailable(detail=f"cannot connect to the hypervisor at {BAD_URI}: refused")
    for_alice = exception_handler(err, {"request": SimpleNamespace(user=alice)})
    assert for_alice.status_code == 503
    assert for_alice.data == {"code": "hypervisor_unavailable", "detail": HypervisorUnavailable.plain}
    for_admin = exception_handler(err, {"request": SimpleNamespace(user=admin_user)})
    assert for_admin.data["detail"] == HypervisorUnavailable.plain
    assert for_admin.data["admin_detail"] == err.detail
    raw = PortalError(f"cannot open {BAD_URI}")
    _assert_clean(json.dumps(exception_handler(raw, {"request": SimpleNamespace(user=alice)}).data))
