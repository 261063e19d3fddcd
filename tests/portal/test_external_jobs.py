"""External-plugin jobs (issue #14, part 5) through the plugin door of the API on test:///default: a plugin
token creates a job on a VM, reports progress, steps and log lines, finishes, fails or is cancelled; the job
shows on the VM page, the job pages, the jobs API, the audit and the admin like the portal's own; plugin and
user credentials never open each other's endpoints."""

from __future__ import annotations

import asyncio
import io

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from portal.choices import JobStatus
from portal.events import user_group
from portal.jobs import jobs_reap_stale
from portal.jobs.services import external_jobs_expire
from portal.models import AuditEvent, Job, PluginToken
from portal.plugins import plugin_token_create
from vms.models import VM
from vms.services import vm_action, vm_create

pytestmark = pytest.mark.django_db(transaction=True)

SMALL = {"vcpus": 1, "memory_mib": 128, "disk_gib": 1}
EXTERNAL = "/api/jobs/external/"


@pytest.fixture
def vm(test_host, alice):
    return vm_create(actor=alice, via="web", name="web-1", **SMALL).vm


def plugin_client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Plugin {token}")
    return client


@pytest.fixture
def plugin():
    """An all-targets plugin and its API client."""
    row, token = plugin_token_create(actor=None, via="cli", name="backup-agent", all_targets=True)
    return row, plugin_client(token)


def user_client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _start(client: APIClient, vm: VM, **extra) -> dict:
    response = client.post(EXTERNAL, {"kind": "external.backup", "target_type": "vm", "target": vm.name,
                                      "description": "Nightly backup to tape", **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_plugin_job_flow_create_progress_steps_log_finish(vm, alice, plugin):
    row, client = plugin
    job = _start(client, vm, step="Quiescing the guest")
    assert (job["status"], job["progress"], job["step"], job["target_name"], job["cancel_requested"]) == (
        "running", 0, "Quiescing the guest", "web-1", False)

    report = client.post(f"{EXTERNAL}{job['id']}/progress/", {
        "progress": 40, "step": "Copying disk vda",
        "log": ["copied 1 GiB\x1b[31m", "tape\x00 drive\x07 ok", "   "]}, format="json")
    assert report.status_code == 200, report.content
    assert (report.json()["progress"], report.json()["step"]) == (40, "Copying disk vda")
    row_job = Job.objects.get(pk=job["id"])
    assert row_job.external and row_job.plugin == row and row_job.via == "plugin"
    assert "Copying disk vda\n" in row_job.log
    assert "copied 1 GiB [31m\n" in row_job.log and "tape drive ok\n" in row_job.log  # controls removed
    assert "\x1b" not in row_job.log and "\x00" not in row_job.log

    # The VM's owner sees it like a portal job: the jobs API, the VM page, the job page.
    mine = user_client(alice).get(f"/api/jobs/{job['id']}/").json()
    assert (mine["kind"], mine["status"], mine["progress"], mine["plugin"], mine["external"], mine["actor"]) == (
        "external.backup", "running", 40, "backup-agent", True, None)
    web = Client()
    web.force_login(alice)
    page = web.get(f"/vms/{vm.pk}/").content.decode()
    assert f'data-job-id="{job["id"]}"' in page and "plugin backup-agent · Plugin" in page
    detail = web.get(f"/jobs/{job['id']}/").content.decode()
    assert "Nightly backup to tape" in detail and "Copying disk vda" in detail
    assert "Cancel job" not in detail  # not created cancellable

    done = client.post(f"{EXTERNAL}{job['id']}/finish/", {"result": {"bytes": 1073741824}}, format="json")
    assert done.status_code == 200, done.content
    assert (done.json()["status"], done.json()["progress"], done.json()["result"]) == (
        "succeeded", 100, {"bytes": 1073741824})
    again = client.post(f"{EXTERNAL}{job['id']}/progress/", {"progress": 50}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "invalid_state"
    assert "has ended" in again.json()["detail"]
    assert client.post(f"{EXTERNAL}{job['id']}/finish/", {}, format="json").status_code == 409

    audit = list(AuditEvent.objects.filter(job_id=job["id"]).order_by("id").values_list(
        "action", "outcome", "actor_name", "via", "target_type", "target_id"))
    assert audit == [("external.backup", "requested", "plugin:backup-agent", "plugin", "vm", str(vm.pk)),
                     ("external.backup", "succeeded", "plugin:backup-agent", "plugin", "vm", str(vm.pk))]
    activity = web.get(f"/vms/{vm.pk}/").content.decode()
    assert "plugin:backup-agent · Plugin" in activity  # the VM page's activity (audit) names the plugin


def test_plugin_fails_its_job_with_an_error_the_owner_reads(vm, alice, plugin):
    _, client = plugin
    job = _start(client, vm)
    no_reason = client.post(f"{EXTERNAL}{job['id']}/fail/", {}, format="json")
    assert no_reason.status_code == 400 and no_reason.json()["errors"] == {"error": ["error: say why the job failed."]}

    failed = client.post(f"{EXTERNAL}{job['id']}/fail/", {"error": "Tape drive offline", "log": "drive 2: no medium"},
                         format="json")
    assert failed.status_code == 200
    assert (failed.json()["status"], failed.json()["error"]) == ("failed", "Tape drive offline")
    assert user_client(alice).get(f"/api/jobs/{job['id']}/").json()["error"] == "Tape drive offline"
    event = AuditEvent.objects.filter(job_id=job["id"]).latest("id")
    assert (event.outcome, event.message) == ("failed", "Tape drive offline")
    assert "drive 2: no medium" in Job.objects.get(pk=job["id"]).log


def test_owner_cancels_a_cancellable_job_and_the_plugin_acknowledges(vm, alice, bob, plugin):
    _, client = plugin
    job = _start(client, vm, cancellable=True)
    # Bob may not see alice's VM: its jobs are not his to cancel.
    assert user_client(bob).post(f"/api/jobs/{job['id']}/cancel/").status_code == 404

    web = Client()
    web.force_login(alice)
    assert "Cancel job" in web.get(f"/jobs/{job['id']}/").content.decode()
    asked = user_client(alice).post(f"/api/jobs/{job['id']}/cancel/")
    assert asked.status_code == 200, asked.content
    assert (asked.json()["status"], asked.json()["cancel_requested"]) == ("running", True)
    assert "Cancel job" not in web.get(f"/jobs/{job['id']}/").content.decode()
    # Asking twice changes nothing.
    assert user_client(alice).post(f"/api/jobs/{job['id']}/cancel/").status_code == 200

    seen = client.post(f"{EXTERNAL}{job['id']}/progress/", {"step": "Stopping the copy"}, format="json").json()
    assert seen["cancel_requested"] is True
    assert client.get(f"{EXTERNAL}{job['id']}/").json()["cancel_requested"] is True
    ended = client.post(f"{EXTERNAL}{job['id']}/finish/", {"status": "cancelled"}, format="json").json()
    assert (ended["status"], ended["step"]) == ("cancelled", "Cancelled")
    actions = list(AuditEvent.objects.filter(job_id=job["id"]).order_by("id").values_list("action", "actor_name"))
    assert actions == [("external.backup", "plugin:backup-agent"), ("job.cancel", "alice"),
                       ("job.cancelled", "plugin:backup-agent")]
    late = user_client(alice).post(f"/api/jobs/{job['id']}/cancel/")
    assert late.status_code == 409 and "already ended" in late.json()["detail"]


def test_web_cancel_and_the_portal_cancels_when_the_plugin_does_not(vm, alice, plugin, settings):
    _, client = plugin
    job = _start(client, vm, cancellable=True)
    web = Client()
    web.force_login(alice)
    response = web.post(f"/jobs/{job['id']}/cancel/")
    assert response.status_code == 302
    assert Job.objects.get(pk=job["id"]).cancel_requested_at is not None

    assert external_jobs_expire() == []  # within the grace period
    settings.EXTERNAL_JOB_CANCEL_GRACE_SECONDS = 0
    jobs_reap_stale()
    row = Job.objects.get(pk=job["id"])
    assert (row.status, row.error) == ("cancelled", "Cancelled: the plugin did not stop the job in time.")
    late = client.post(f"{EXTERNAL}{job['id']}/progress/", {"progress": 90}, format="json")
    assert late.status_code == 409


def test_a_job_not_created_cancellable_is_refused_with_409(vm, alice, plugin):
    _, client = plugin
    job = _start(client, vm)
    refused = user_client(alice).post(f"/api/jobs/{job['id']}/cancel/")
    assert refused.status_code == 409
    assert refused.json()["detail"] == "Backup was started by a plugin that cannot cancel it."


def test_a_plugin_that_stops_reporting_fails_its_job(vm, plugin, settings):
    _, client = plugin
    job = _start(client, vm)
    settings.EXTERNAL_JOB_TIMEOUT_SECONDS = 0
    jobs_reap_stale()
    row = Job.objects.get(pk=job["id"])
    assert row.status == JobStatus.FAILED and "stopped reporting" in row.error


def test_another_plugin_cannot_touch_the_job_and_scope_limits_targets(vm, alice, test_host, plugin):
    _, client = plugin
    job = _start(client, vm)
    _, other_token = plugin_token_create(actor=None, via="cli", name="other", all_targets=True)
    other = plugin_client(other_token)
    for path, body in [("progress/", {"progress": 10}), ("finish/", {}), ("fail/", {"error": "x"}), ("", None)]:
        response = other.post(f"{EXTERNAL}{job['id']}/{path}", body, format="json") if body is not None \
            else other.get(f"{EXTERNAL}{job['id']}/")
        assert response.status_code == 404, (path, response.content)
    assert other.get(EXTERNAL).json()["count"] == 0
    assert client.get(EXTERNAL).json()["count"] == 1

    # A plugin scoped to a group reaches that group's VMs only, and no host.
    team = Group.objects.create(name="team")
    _, scoped_token = plugin_token_create(actor=None, via="cli", name="scoped", groups=["team"])
    scoped = plugin_client(scoped_token)
    body = {"kind": "external.scan", "target_type": "vm", "target": str(vm.pk)}
    assert scoped.post(EXTERNAL, body, format="json").status_code == 404
    assert scoped.post(EXTERNAL, {**body, "target_type": "host", "target": test_host.name},
                       format="json").status_code == 404
    VM.objects.filter(pk=vm.pk).update(group=team)
    assert scoped.post(EXTERNAL, body, format="json").status_code == 201
    # An all-targets plugin may attach jobs to hosts.
    on_host = client.post(EXTERNAL, {**body, "target_type": "host", "target": test_host.name}, format="json")
    assert on_host.status_code == 201 and on_host.json()["target_name"] == test_host.name


def test_credentials_stay_on_their_own_side(vm, alice, plugin):
    row, client = plugin
    # A plugin token is nobody on the user endpoints.
    for path in ("/api/vms/", "/api/jobs/", f"/api/vms/{vm.pk}/"):
        assert client.get(path).status_code == 401, path
    assert client.post(f"/api/vms/{vm.pk}/stop/").status_code == 401
    # A user (token or session) is nobody on the plugin endpoints.
    token = Token.objects.create(user=alice)
    as_user = APIClient()
    as_user.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert as_user.get("/api/vms/").status_code == 200
    assert as_user.get(EXTERNAL).status_code == 401
    assert as_user.post(EXTERNAL, {"kind": "external.x", "target_type": "vm", "target": vm.name},
                        format="json").status_code == 401
    session = APIClient()
    session.force_login(alice)
    assert session.post(EXTERNAL, {"kind": "external.x", "target_type": "vm", "target": vm.name},
                        format="json").status_code in (401, 403)
    # Bad and revoked tokens are refused; use is recorded.
    assert plugin_client("vmp_not-a-token").get(EXTERNAL).status_code == 401
    assert client.get(EXTERNAL).status_code == 200
    row.refresh_from_db()
    assert row.last_used_at is not None
    call_command("plugin-token", "revoke", "backup-agent", stdout=io.StringIO())
    refused = client.get(EXTERNAL)
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]


@pytest.mark.parametrize(("body", "field"), [
    ({"kind": "backup"}, "kind"),
    ({"kind": "external."}, "kind"),
    ({"kind": "external.Backup"}, "kind"),
    ({"target_type": "disk"}, "target_type"),
    ({"description": "x" * 501}, "description"),
    ({"step": "y" * 201}, "step"),
])
def test_bad_create_input_is_a_400_naming_the_field(vm, plugin, body, field):
    _, client = plugin
    response = client.post(EXTERNAL, {"kind": "external.backup", "target_type": "vm", "target": vm.name, **body},
                           format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert not Job.objects.filter(external=True).exists()


@pytest.mark.parametrize(("body", "field"), [
    ({"progress": 101}, "progress"),
    ({"progress": -1}, "progress"),
    ({"progress": "half"}, "progress"),
    ({"progress": 4.5}, "progress"),
    ({"log": ["x"] * 101}, "log"),
    ({"log": ["z" * 501]}, "log"),
    ({"log": {"a": 1}}, "log"),
])
def test_bad_reports_are_400s(vm, plugin, body, field):
    _, client = plugin
    job = _start(client, vm)
    response = client.post(f"{EXTERNAL}{job['id']}/progress/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert Job.objects.get(pk=job["id"]).progress == 0


def test_bad_finishes_and_unknown_targets(vm, plugin):
    _, client = plugin
    job = _start(client, vm)
    assert client.post(f"{EXTERNAL}{job['id']}/finish/", {"status": "done"}, format="json").status_code == 400
    assert client.post(f"{EXTERNAL}{job['id']}/finish/", {"result": [1]}, format="json").status_code == 400
    assert client.post(f"{EXTERNAL}{job['id']}/finish/", {"error": "x"}, format="json").status_code == 400
    assert client.post(f"{EXTERNAL}not-a-uuid/progress/", {"progress": 1}, format="json").status_code == 404
    missing = client.post(EXTERNAL, {"kind": "external.x", "target_type": "vm", "target": "nope"}, format="json")
    assert missing.status_code == 404 and missing.json()["detail"] == "VM nope not found."


def test_job_events_reach_the_vm_owner_live(vm, alice, plugin):
    """publish_job sends an external job's changes to the VM owner's group (it has no actor)."""
    _, client = plugin
    layer = get_channel_layer()

    async def listen():
        name = await layer.new_channel()
        await layer.group_add(user_group(alice.pk), name)
        return name

    channel = async_to_sync(listen)()
    job = _start(client, vm)
    client.post(f"{EXTERNAL}{job['id']}/progress/", {"progress": 70, "step": "Verifying"}, format="json")

    async def drain():
        seen = []
        while True:
            try:
                message = await asyncio.wait_for(layer.receive(channel), timeout=0.5)
            except TimeoutError:
                return seen
            seen.append(message["event"])

    events = [e for e in async_to_sync(drain)() if e.get("kind") == "job" and e["id"] == job["id"]]
    assert [(e["status"], e["progress"], e["step"]) for e in events][-1] == ("running", 70, "Verifying")


def test_pending_power_job_can_be_cancelled_and_create_cannot(vm, alice, settings):
    settings.TASKS = {"default": {"BACKEND": "django.tasks.backends.dummy.DummyBackend"}}  # nothing runs the jobs
    result = vm_action(actor=alice, via="web", vm=vm.pk, action="stop")
    vm.refresh_from_db()
    assert (result.job.status, vm.status) == ("pending", "stopping")
    cancelled = user_client(alice).post(f"/api/jobs/{result.job.pk}/cancel/")
    assert cancelled.status_code == 200, cancelled.content
    assert (cancelled.json()["status"], cancelled.json()["error"]) == ("cancelled", "Cancelled before it started.")
    vm.refresh_from_db()
    assert vm.status == "running"
    assert AuditEvent.objects.filter(job=result.job, action="job.cancel", actor=alice).exists()

    other = vm_create(actor=alice, via="web", name="web-2", **SMALL)
    refused = user_client(alice).post(f"/api/jobs/{other.job.pk}/cancel/")
    assert refused.status_code == 409
    assert refused.json()["detail"] == ("Create cannot be cancelled: jobs of this kind are not safe to stop once "
                                        "queued.")
    # The CLI door: the same refusal, with the exit status of a wrong state.
    with pytest.raises(CommandError) as exc:
        call_command("job", "--user", "alice", "cancel", str(other.job.pk))
    assert exc.value.returncode == 5 and "cannot be cancelled" in str(exc.value)
    shown = io.StringIO()
    call_command("job", "show", str(result.job.pk), stdout=shown)  # as the system: every job
    assert f"{result.job.pk} Stop web-1 — cancelled 0% Cancelled: Cancelled before it started. [by alice]" in shown.getvalue()


def test_plugin_token_cli_and_admin(admin_user, vm):
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="scope"):
        call_command("plugin-token", "create", "nightly", stdout=out, stderr=err)
    call_command("plugin-token", "create", "nightly", "--scope", "all", stdout=out, stderr=err)
    token = out.getvalue().strip()
    assert token.startswith("vmp_") and "shown once" in err.getvalue()
    row = PluginToken.objects.get(name="nightly")
    assert row.token_hash != token and token not in row.token_hash
    assert plugin_client(token).get(EXTERNAL).status_code == 200
    with pytest.raises(CommandError, match="already has an active token"):
        call_command("plugin-token", "create", "nightly", "--scope", "all", stdout=io.StringIO())
    listing = io.StringIO()
    call_command("plugin-token", "list", stdout=listing)
    assert "nightly" in listing.getvalue() and "active" in listing.getvalue()

    admin = Client()
    admin.force_login(admin_user)
    created = admin.post("/admin/portal/plugintoken/add/", {"name": "from-admin", "all_targets": "on"}, follow=True)
    page = created.content.decode()
    assert "The token of plugin from-admin is vmp_" in page
    shown = page.split("The token of plugin from-admin is ")[1].split(" ")[0]
    assert plugin_client(shown).get(EXTERNAL).status_code == 200
    refused = admin.post("/admin/portal/plugintoken/add/", {"name": "from-admin", "all_targets": "on"})
    assert "already has an active token" in refused.content.decode()
    assert AuditEvent.objects.filter(action="plugin_token.create", target_name="from-admin", via="admin").exists()

    job = _start(plugin_client(shown), vm)
    changelist = admin.get("/admin/portal/job/?external__exact=1").content.decode()
    assert "plugin from-admin" in changelist
    assert admin.get(f"/admin/portal/job/{job['id']}/change/").status_code == 200
    revoked = admin.post("/admin/portal/plugintoken/", {"action": "revoke_tokens",
                                                        "_selected_action": [PluginToken.objects.get(name="from-admin").pk]},
                         follow=True)
    assert "Revoked the token of plugin from-admin." in revoked.content.decode()
    assert plugin_client(shown).get(EXTERNAL).status_code == 401


def test_a_running_plugin_job_does_not_hold_the_vm(vm, alice, plugin):
    """A plugin's job is work outside the portal: the owner's own actions on the VM go on meanwhile."""
    _, client = plugin
    job = _start(client, vm)
    snapshot = user_client(alice).post(f"/api/vms/{vm.pk}/snapshots/", {"name": "during-backup"}, format="json")
    assert snapshot.status_code == 202, snapshot.content
    paused = user_client(alice).post(f"/api/vms/{vm.pk}/pause/")
    assert paused.status_code == 202, paused.content
    vm.refresh_from_db()
    assert vm.status == "paused"
    assert Job.objects.get(pk=job["id"]).status == "running"


def test_a_credential_on_the_wrong_side_is_told_where_it_belongs(vm, alice, plugin):
    """401s that say which credential the endpoint takes, not DRF's "credentials were not provided" (a user
    who sent a token reads that as the token being lost)."""
    _row, client = plugin
    for path in ("/api/vms/", f"/api/vms/{vm.pk}/", "/api/jobs/"):
        refused = client.get(path)
        assert refused.status_code == 401, path
        assert "/api/jobs/external/" in refused.json()["detail"], refused.json()
    token = Token.objects.create(user=alice)
    as_user = APIClient()
    as_user.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    refused = as_user.get(EXTERNAL)
    assert refused.status_code == 401
    assert "user's API token" in refused.json()["detail"] and "Plugin <token>" in refused.json()["detail"]
    session = Client()
    session.force_login(alice)
    refused = session.get(EXTERNAL)
    assert refused.status_code == 401 and "Plugin <token>" in refused.json()["detail"]
    nobody = APIClient().get(EXTERNAL)
    assert nobody.status_code == 401
    assert nobody.json()["detail"] == "A plugin token is required: 'Authorization: Plugin <token>'."
    assert nobody["WWW-Authenticate"] == "Plugin"
