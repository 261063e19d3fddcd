"""The web portal's pages: lists, the create form, the VM page, actions and jobs (libvirt test driver)."""

from __future__ import annotations

import re

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from portal.choices import Via
from portal.models import Job
from vms.choices import VMStatus
from vms.models import VM, Flavor
from vms.services import vm_create, vm_set_status

pytestmark = pytest.mark.django_db


@pytest.fixture
def run_jobs(django_capture_on_commit_callbacks):
    """Run the jobs that a block queues (tests run inside a transaction that never commits)."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def make_vm(test_host, run_jobs):
    def make(owner, name="web-1", **kwargs):
        kwargs = {"vcpus": 1, "memory_mib": 128, "disk_gib": 1, **kwargs}
        with run_jobs():
            result = vm_create(actor=owner, via=Via.API, name=name, **kwargs)
        return VM.objects.get(pk=result.vm.pk)

    return make


def _messages(response) -> list[str]:
    """Messages waiting to be shown (those of earlier unfollowed redirects come first)."""
    return [str(m) for m in get_messages(response.wsgi_request)]


def _text(response) -> str:
    """The page's visible text, tags stripped and whitespace collapsed (for asserting wording)."""
    html = response.content.decode()
    html = re.sub(r"<(script|style|template)\b.*?</\1>", " ", html, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


# --- access ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["/", "/vms/new/", "/vms/1/", "/jobs/"])
def test_anonymous_users_are_sent_to_the_login_page(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


def test_anonymous_status_json_is_401_not_a_redirect(client):
    response = client.get("/vms/status.json")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_login_page_renders_and_signs_in(client, alice):
    page = client.get("/login/")
    assert page.status_code == 200
    assert "Sign in" in _text(page)
    response = client.post("/login/", {"username": "alice", "password": "pw-alice"})
    assert response.status_code == 302 and response["Location"] == reverse("vms:list")


def test_another_users_vm_is_a_404_everywhere(client, alice, bob, make_vm):
    vm = make_vm(alice)
    client.force_login(bob)
    assert client.get(f"/vms/{vm.pk}/").status_code == 404
    assert client.post(f"/vms/{vm.pk}/action/stop/").status_code == 404
    assert client.post(f"/vms/{vm.pk}/delete/", {"confirm_name": vm.name}).status_code == 404
    assert client.post(f"/vms/{vm.pk}/edit/", {"name": "stolen"}).status_code == 404
    vm.refresh_from_db()
    assert vm.status == VMStatus.RUNNING and vm.name == "web-1"
    assert "web-1" not in _text(client.get("/"))


def test_actions_only_accept_post(client, alice, make_vm):
    vm = make_vm(alice)
    client.force_login(alice)
    assert client.get(f"/vms/{vm.pk}/action/stop/").status_code == 405
    assert client.get(f"/vms/{vm.pk}/delete/").status_code == 405


# --- My VMs -----------------------------------------------------------------------------------------

def test_empty_list_says_what_to_do_and_shows_the_quota(client, alice, test_host):
    client.force_login(alice)
    response = client.get("/")
    assert response.status_code == 200
    text = _text(response)
    assert "No VMs yet — Create your first VM" in text
    assert "VMs 0 / 3" in text and "vCPUs 0 / 4" in text and "Memory 0 MiB / 2 GiB" in text
    assert "Disk 0 / 20 GiB" in text


def test_list_shows_each_vm_with_state_size_and_actions(client, alice, make_vm):
    vm = make_vm(alice, name="web-1", memory_mib=256, disk_gib=2)
    client.force_login(alice)
    response = client.get("/")
    text = _text(response)
    assert "web-1" in text and "Running" in text
    assert "1 vCPU · 256 MiB · 2 GiB" in text
    assert "vCPUs 1 / 4" in text
    html = response.content.decode()
    assert f'href="/vms/{vm.pk}/"' in html
    assert f'action="/vms/{vm.pk}/action/stop/"' in html
    # Start is disabled for a running VM; Stop is not.
    start = re.search(r'<button[^>]*data-action="start"[^>]*>', html).group(0)
    stop = re.search(r'<button[^>]*data-action="stop"[^>]*>', html).group(0)
    assert "disabled" in start and "disabled" not in stop
    assert "Host" not in [th.strip() for th in re.findall(r"<th[^>]*>([^<]*)</th>", html)]


def test_list_filters_by_state_and_search(client, alice, make_vm):
    make_vm(alice, name="web-1")
    db = make_vm(alice, name="db-1")
    vm_set_status(db, VMStatus.STOPPED)
    client.force_login(alice)
    text = _text(client.get("/", {"status": "stopped"}))
    assert "db-1" in text and "web-1" not in text
    text = _text(client.get("/", {"q": "web"}))
    assert "web-1" in text and "db-1" not in text
    text = _text(client.get("/", {"q": "nothing-like-this"}))
    assert "No VMs match this filter" in text


def test_staff_see_the_host_and_owner_columns(client, alice, admin_user, make_vm):
    make_vm(alice)
    client.force_login(admin_user)
    html = client.get("/").content.decode()
    headers = [th.strip() for th in re.findall(r"<th[^>]*>([^<]*)</th>", html)]
    assert "Host" in headers and "Owner" in headers
    assert "testhost" in html and "alice" in html


# --- Create VM ------------------------------------------------------------------------------------------

def test_create_form_shows_flavors_images_and_remaining_quota(client, alice, test_host):
    Flavor.objects.create(name="tiny", vcpus=1, memory_mib=128, disk_gib=1, description="Smallest")
    Flavor.objects.create(name="huge", vcpus=8, memory_mib=8192, disk_gib=100)
    client.force_login(alice)
    response = client.get("/vms/new/")
    assert response.status_code == 200
    text = _text(response)
    assert "tiny 1 vCPU · 128 MiB · 1 GiB" in text
    assert "huge 8 vCPU · 8 GiB · 100 GiB More than your remaining quota" in text
    assert "Blank (test driver)" in text and "4 KiB" in text
    assert "Remaining quota" in text and "vCPUs 4 left of 4" in text
    html = response.content.decode()
    assert 'pattern="[a-z0-9]([a-z0-9\\-]{0,61}[a-z0-9])?"' in html
    assert ">Create VM</button>" in html


def test_create_with_a_flavor_redirects_to_the_new_vms_page(client, alice, test_host, run_jobs):
    Flavor.objects.create(name="tiny", vcpus=1, memory_mib=128, disk_gib=1)
    client.force_login(alice)
    with run_jobs():
        response = client.post("/vms/new/", {"name": "web-1", "flavor": "tiny", "image": "",
                                             "description": "my first"})
    vm = VM.objects.get(owner=alice, name="web-1")
    assert response.status_code == 302 and response["Location"] == f"/vms/{vm.pk}/"
    assert (vm.vcpus, vm.memory_mib, vm.disk_gib, vm.created_via) == (1, 128, 1, Via.WEB)
    assert vm.status == VMStatus.RUNNING
    assert _messages(response) == ["Creating web-1."]
    page = client.get(response["Location"])
    text = _text(page)
    assert "web-1" in text and "Running" in text and "my first" in text and "Web portal" in text


def test_create_with_a_custom_size(client, alice, test_host):
    client.force_login(alice)
    response = client.post("/vms/new/", {"name": "custom-1", "flavor": "custom", "vcpus": "2",
                                         "memory_mib": "256", "disk_gib": "3"})
    assert response.status_code == 302
    vm = VM.objects.get(name="custom-1")
    assert (vm.vcpus, vm.memory_mib, vm.disk_gib, vm.flavor) == (2, 256, 3, None)


def test_team_members_choose_the_owner_and_the_team_quota_applies(client, alice, bob, test_host):
    from django.contrib.auth.models import Group

    from quotas.models import Quota

    team = Group.objects.create(name="infra")
    alice.groups.add(team)
    Quota.objects.create(group=team, max_vms=5, max_vcpus=8, max_memory_mib=4096, max_disk_gib=50)
    client.force_login(alice)
    page = client.get("/vms/new/").content.decode()
    assert "Team infra, on the team's quota" in page and 'id="quota-by-owner"' in page
    response = client.post("/vms/new/", {"name": "shared-1", "flavor": "custom", "vcpus": "1",
                                         "memory_mib": "128", "disk_gib": "1", "group": "infra"})
    assert response.status_code == 302
    vm = VM.objects.get(name="shared-1")
    assert vm.group == team and vm.owner == alice
    refused = client.post("/vms/new/", {"name": "not-mine", "flavor": "custom", "vcpus": "1",
                                        "memory_mib": "128", "disk_gib": "1", "group": "admins"})
    assert refused.status_code == 400 and "Unknown group &#x27;admins&#x27; (yours: infra)" in refused.content.decode()
    client.force_login(bob)  # not in a team: no owner choice at all
    assert 'name="group"' not in client.get("/vms/new/").content.decode()


def test_validation_errors_appear_next_to_their_fields(client, alice, test_host):
    client.force_login(alice)
    response = client.post("/vms/new/", {"name": "Web_1", "flavor": "custom", "vcpus": "lots",
                                         "memory_mib": "99999999", "disk_gib": "2"})
    assert response.status_code == 400
    html = response.content.decode()
    name_error = re.search(r'id="name-error"[^>]*>(.*?)</div>', html, re.S).group(1)
    assert "Invalid name &#x27;Web_1&#x27;: use 1–63 characters" in name_error
    assert VM.objects.count() == 0
    # Once the name is fixed, the size errors show next to the size fields.
    response = client.post("/vms/new/", {"name": "web-1", "flavor": "custom", "vcpus": "lots",
                                         "memory_mib": "99999999", "disk_gib": "2"})
    html = response.content.decode()
    vcpus_error = re.search(r'id="vcpus-error"[^>]*>(.*?)</div>', html, re.S).group(1)
    memory_error = re.search(r'id="memory_mib-error"[^>]*>(.*?)</div>', html, re.S).group(1)
    assert "vCPUs must be a whole number (got &#x27;lots&#x27;)." in vcpus_error
    assert "Memory must be between 64 and 65536 MiB (got 99999999 MiB)." in memory_error
    assert 'value="web-1"' in html  # what the user typed is kept
    assert VM.objects.count() == 0


@pytest.mark.parametrize("name", ["<evil/>", "a&b", "x'y", 'q"uote', "web-1]]><domain>", "ünï"])
def test_xml_metacharacters_in_names_are_rejected_with_a_clear_message(client, alice, test_host, name):
    client.force_login(alice)
    response = client.post("/vms/new/", {"name": name, "flavor": "custom", "vcpus": "1",
                                         "memory_mib": "128", "disk_gib": "1"})
    assert response.status_code == 400
    assert response.context["form"].errors["name"][0].startswith("Invalid name")
    assert "lowercase letters, digits and hyphens" in _text(response)
    assert "<evil/>" not in response.content.decode()  # echoed escaped, never as markup
    assert VM.objects.count() == 0 and Job.objects.count() == 0


def test_quota_exceeded_is_a_form_level_error_in_plain_words(client, alice, test_host):
    client.force_login(alice)
    response = client.post("/vms/new/", {"name": "big-1", "flavor": "custom", "vcpus": "6",
                                         "memory_mib": "128", "disk_gib": "1"})
    assert response.status_code == 400
    errors = response.context["form"].non_field_errors()
    assert errors == ["Quota exceeded for vCPUs: requested 6, 0 of 4 in use. "
                      "Delete or shrink a VM, or ask an administrator for a larger quota."]
    text = _text(response)
    assert "The VM was not created." in text and "Quota exceeded for vCPUs" in text
    assert VM.objects.count() == 0


def test_duplicate_name_is_shown_next_to_the_name(client, alice, make_vm):
    make_vm(alice, name="web-1")
    client.force_login(alice)
    response = client.post("/vms/new/", {"name": "web-1", "flavor": "custom", "vcpus": "1",
                                         "memory_mib": "128", "disk_gib": "1"})
    assert response.context["form"].errors["name"] == ["You already have a VM named 'web-1'."]


# --- VM page and actions ------------------------------------------------------------------------------

def test_detail_shows_overview_actions_consoles_and_activity(client, alice, make_vm):
    vm = make_vm(alice, description="build box")
    client.force_login(alice)
    response = client.get(f"/vms/{vm.pk}/")
    assert response.status_code == 200
    text = _text(response)
    for expected in ("web-1", "Running", "build box", "Overview", "vCPUs 1", "Memory 128 MiB", "Disk 1 GiB",
                     "Host testhost", f"Domain name {vm.domain_name}", "Created by alice", "Created via REST API",
                     "Activity", "Create Succeeded", "100%", "Done", "Create web-1: 1 vCPU, 128 MiB, 1 GiB"):
        assert expected in text, expected
    html = response.content.decode()
    assert f'href="/consoles/vm/{vm.pk}/screen/"' in html and f'href="/consoles/vm/{vm.pk}/terminal/"' in html
    assert "test:///default" not in html  # host URIs are for administrators
    buttons = dict(re.findall(r'<button[^>]*data-action="(\w+)"([^>]*)>', html))
    assert "disabled" in buttons["start"] and "disabled" in buttons["resume"]
    assert "disabled" not in buttons["stop"] and "disabled" not in buttons["force_off"]


def test_stop_action_queues_the_job_and_says_so(client, alice, make_vm, run_jobs):
    vm = make_vm(alice)
    client.force_login(alice)
    with run_jobs():
        response = client.post(f"/vms/{vm.pk}/action/stop/", {"next": "/"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert _messages(response) == ["Stopping web-1."]
    vm.refresh_from_db()
    assert vm.status == VMStatus.STOPPED
    job = Job.objects.filter(kind="vm.stop").get()
    assert job.via == Via.WEB and job.actor == alice


def test_an_action_that_does_not_fit_the_state_is_a_message_not_an_error_page(client, alice, make_vm):
    vm = make_vm(alice)
    vm_set_status(vm, VMStatus.STOPPED)
    client.force_login(alice)
    response = client.post(f"/vms/{vm.pk}/action/reboot/", HTTP_REFERER=f"http://testserver/vms/{vm.pk}/")
    assert response.status_code == 302 and response["Location"] == f"http://testserver/vms/{vm.pk}/"
    assert _messages(response) == ["Cannot reboot web-1: it is stopped: start it instead."]
    response = client.post(f"/vms/{vm.pk}/action/explode/")
    assert response.status_code == 302
    assert _messages(response)[-1].startswith("Unknown action 'explode'")


def test_starting_a_running_vm_is_a_friendly_no_op(client, alice, make_vm):
    vm = make_vm(alice)
    client.force_login(alice)
    response = client.post(f"/vms/{vm.pk}/action/start/")
    assert response.status_code == 302 and response["Location"] == f"/vms/{vm.pk}/"
    assert _messages(response) == ["web-1 is already running."]


def test_next_pointing_off_site_is_ignored(client, alice, make_vm):
    vm = make_vm(alice)
    client.force_login(alice)
    response = client.post(f"/vms/{vm.pk}/action/start/", {"next": "https://evil.example/"})
    assert response["Location"] == f"/vms/{vm.pk}/"


def test_delete_needs_the_vms_name(client, alice, make_vm, run_jobs):
    vm = make_vm(alice)
    client.force_login(alice)
    response = client.post(f"/vms/{vm.pk}/delete/", {"confirm_name": "web-2"},
                           HTTP_REFERER=f"http://testserver/vms/{vm.pk}/")
    assert _messages(response) == ["Type the VM's name (web-1) to confirm deletion."]
    vm.refresh_from_db()
    assert vm.status == VMStatus.RUNNING
    with run_jobs():
        response = client.post(f"/vms/{vm.pk}/delete/", {"confirm_name": "web-1"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert _messages(response)[-1] == "Deleting web-1."
    vm.refresh_from_db()
    assert vm.status == VMStatus.DELETED
    assert client.get(f"/vms/{vm.pk}/").status_code == 404


def test_rename_and_describe(client, alice, make_vm):
    vm = make_vm(alice)
    client.force_login(alice)
    response = client.post(f"/vms/{vm.pk}/edit/", {"name": "web-2", "description": "renamed"})
    assert response.status_code == 302
    assert _messages(response) == ["Saved the settings of web-2."]
    vm.refresh_from_db()
    assert (vm.name, vm.description) == ("web-2", "renamed")


def test_rename_errors_appear_next_to_the_name(client, alice, make_vm):
    vm = make_vm(alice)
    client.force_login(alice)
    response = client.post(f"/vms/{vm.pk}/edit/", {"name": "<b>bad</b>", "description": ""})
    assert response.status_code == 400
    assert response.context["edit_form"].errors["name"][0].startswith("Invalid name")
    vm.refresh_from_db()
    assert vm.name == "web-1"


# --- jobs and live state ----------------------------------------------------------------------------------

def test_jobs_page_lists_jobs_with_progress_and_errors_but_never_tracebacks(client, alice, bob, make_vm):
    vm = make_vm(alice)
    job = Job.objects.get(kind="vm.create")
    Job.objects.filter(pk=job.pk).update(status="errored", error="Internal error: KeyError",
                                         traceback="Traceback (most recent call last): secret")
    client.force_login(alice)
    text = _text(client.get("/jobs/"))
    assert "Create" in text and vm.name in text and "Errored" in text and "Internal error: KeyError" in text
    assert "Traceback" not in text
    detail = client.get(f"/jobs/{job.pk}/")
    assert detail.status_code == 200
    assert "Internal error: KeyError" in _text(detail) and "secret" not in detail.content.decode()
    client.force_login(bob)
    assert client.get(f"/jobs/{job.pk}/").status_code == 404
    assert vm.name not in _text(client.get("/jobs/"))


def test_staff_see_tracebacks_on_the_job_page(client, alice, admin_user, make_vm):
    make_vm(alice)
    job = Job.objects.get(kind="vm.create")
    Job.objects.filter(pk=job.pk).update(status="errored", traceback="Traceback: the bug")
    client.force_login(admin_user)
    assert "Traceback: the bug" in client.get(f"/jobs/{job.pk}/").content.decode()


def test_status_json_lists_visible_vms_and_recent_jobs(client, alice, bob, make_vm):
    vm = make_vm(alice)
    client.force_login(alice)
    data = client.get("/vms/status.json").json()
    assert [(v["id"], v["name"], v["status"], v["status_label"]) for v in data["vms"]] == [
        (vm.pk, "web-1", "running", "Running")]
    assert data["jobs"][0]["job_kind"] == "vm.create" and data["jobs"][0]["status"] == "succeeded"
    assert "traceback" not in data["jobs"][0]
    client.force_login(bob)
    assert client.get("/vms/status.json").json() == {"vms": [], "jobs": []}


# --- the one error mapping (portal/web.py) -------------------------------------------------------------

def test_hypervisor_errors_read_plainly_for_users_and_in_full_for_admins(alice, admin_user):
    from portal.exceptions import DomainNotFound, HypervisorUnavailable, OperationFailed
    from portal.exceptions import user_message as error_text
    from portal.web import is_web_404

    failed = OperationFailed("internal error: qemu+ssh://node-7/system: monitor socket closed")
    assert "qemu+ssh" not in error_text(failed, user=alice)
    assert "could not do this" in error_text(failed, user=alice)
    assert error_text(failed, user=admin_user) == failed.message
    assert "cannot be reached" in error_text(HypervisorUnavailable("no route to host"), user=alice)
    # A domain missing on the host is drift to report, not a page that does not exist.
    assert not is_web_404(DomainNotFound("Domain not found: no domain with matching uuid"))


# --- snapshots -------------------------------------------------------------------------------------

def test_snapshots_panel_take_revert_and_delete(client, alice, make_vm, run_jobs):
    vm = make_vm(alice)
    client.force_login(alice)
    page = _text(client.get(f"/vms/{vm.pk}/"))
    assert "Snapshots" in page and "No snapshots yet." in page

    with run_jobs():
        response = client.post(f"/vms/{vm.pk}/snapshots/", {"name": "before-upgrade"})
    assert response.status_code == 302 and response["Location"].endswith(f"/vms/{vm.pk}/#snapshots")
    assert "Taking snapshot before-upgrade of web-1." in _messages(response)
    snap = vm.snapshots.get()
    assert snap.status == "ready" and snap.created_via == Via.WEB
    panel = client.get(f"/vms/{vm.pk}/snapshots/")
    assert panel.status_code == 200
    text = _text(panel)
    assert "before-upgrade" in text and "Disks and memory" in text and "Revert" in text

    with run_jobs():
        response = client.post(f"/vms/{vm.pk}/snapshots/{snap.pk}/revert/")
    assert "Reverting web-1 to snapshot before-upgrade." in _messages(response)
    assert Job.objects.get(kind="vm.snapshot.revert").status == "succeeded"
    with run_jobs():
        client.post(f"/vms/{vm.pk}/snapshots/{snap.pk}/delete/")
    assert not vm.snapshots.exists()


def test_snapshot_mistakes_are_messages_and_others_get_404(client, alice, bob, make_vm, run_jobs):
    vm = make_vm(alice)
    client.force_login(alice)
    response = client.post(f"/vms/{vm.pk}/snapshots/", {"name": "no spaces"}, HTTP_REFERER=f"/vms/{vm.pk}/")
    assert response.status_code == 302
    assert any("Invalid snapshot name 'no spaces'" in m for m in _messages(response))
    assert not vm.snapshots.exists()
    assert client.post(f"/vms/{vm.pk}/snapshots/999/revert/").status_code == 404
    assert client.post(f"/vms/{vm.pk}/snapshots/1/explode/").status_code == 404
    with run_jobs():
        client.post(f"/vms/{vm.pk}/snapshots/", {"name": "mine"})
    snap = vm.snapshots.get()
    client.force_login(bob)
    assert client.get(f"/vms/{vm.pk}/snapshots/").status_code == 404
    assert client.post(f"/vms/{vm.pk}/snapshots/", {"name": "theirs"}).status_code == 404
    assert client.post(f"/vms/{vm.pk}/snapshots/{snap.pk}/delete/").status_code == 404
    assert list(vm.snapshots.values_list("name", flat=True)) == ["mine"]


def test_a_vm_without_an_image_shows_a_dash_on_the_list_and_its_page(client, alice, make_vm):
    """An adopted VM, or one whose image was deleted, has no image: both pages render (they answered 500)."""
    vm = make_vm(alice)
    VM.objects.filter(pk=vm.pk).update(image=None)
    client.force_login(alice)
    for url in (reverse("vms:list"), reverse("vms:detail", args=[vm.pk])):
        response = client.get(url)
        assert response.status_code == 200, url
        assert "—" in response.content.decode()
