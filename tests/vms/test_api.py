"""The REST API for VMs, images, flavors, quota and hosts, end to end on libvirt's test driver.

Jobs run on commit (ImmediateBackend), so these tests use a transactional database: a 202 means the
job has already run by the time the test looks at the database and at libvirt.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from portal.hypervisor import PowerState
from portal.models import Job
from quotas.models import Quota
from vms.models import VM, Flavor

pytestmark = pytest.mark.django_db(transaction=True)

SMALL = {"vcpus": 1, "memory_mib": 128, "disk_gib": 1}


@pytest.fixture
def as_alice(alice, test_host, client_for):
    return client_for(alice)


def create(client, name="web-1", **extra):
    return client.post("/api/vms/", {"name": name, **SMALL, **extra}, format="json")


def domain_uuids(driver) -> set[str]:
    return {d.uuid for d in driver.list_domains()}


# --- create ---------------------------------------------------------------------------------------

def test_create_answers_202_with_job_and_the_vm_runs_in_libvirt(as_alice, alice, driver):
    response = create(as_alice, description="my <b>web</b> server")

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["message"] == "Creating web-1."
    assert body["vm"]["name"] == "web-1"
    assert body["vm"]["owner"] == "alice"
    assert body["vm"]["image"] == "test-blank"  # the default image
    assert body["job"]["kind"] == "vm.create"
    assert body["job"]["url"].endswith(f"/api/jobs/{body['job']['id']}/")
    assert response["Location"] == body["vm"]["url"]

    vm = VM.objects.get(pk=body["vm"]["id"])
    assert vm.status == "running" and vm.created_via == "api"
    assert driver.domain_info(str(vm.uuid)).state == PowerState.RUNNING
    job = as_alice.get(body["job"]["url"]).json()
    assert job["status"] == "succeeded", job
    assert job["target_url"] == body["vm"]["url"]


def test_create_with_flavor_and_start_false_leaves_a_stopped_domain(as_alice, driver):
    Flavor.objects.create(name="small", vcpus=1, memory_mib=256, disk_gib=2)

    response = as_alice.post("/api/vms/", {"name": "db-1", "flavor": "small", "start": False}, format="json")

    assert response.status_code == 202, response.content
    vm = VM.objects.get(name="db-1")
    assert (vm.vcpus, vm.memory_mib, vm.disk_gib, vm.flavor.name) == (1, 256, 2, "small")
    assert vm.status == "stopped"
    assert driver.domain_info(str(vm.uuid)).state == PowerState.SHUTOFF


def test_create_with_image_by_id_and_form_encoded_input_starts_by_default(as_alice, test_host):
    from storage.models import Image

    image = Image.objects.get(name="test-blank")
    response = as_alice.post("/api/vms/", {"name": "form-1", "image": str(image.pk), **SMALL})

    assert response.status_code == 202, response.content
    assert VM.objects.get(name="form-1").status == "running"


def test_create_in_a_group_uses_the_group_and_shares_the_vm(as_alice, alice, make_user, client_for):
    team = Group.objects.create(name="team")
    alice.groups.add(team)
    carol = make_user("carol")
    carol.groups.add(team)

    response = create(as_alice, name="shared-1", group="team")

    assert response.status_code == 202, response.content
    assert response.json()["vm"]["group"] == "team"
    names = [v["name"] for v in client_for(carol).get("/api/vms/").json()["results"]]
    assert names == ["shared-1"]


def test_create_in_an_unknown_group_is_a_field_error(as_alice):
    response = create(as_alice, group="nope")

    assert response.status_code == 400
    assert response.json()["errors"]["group"] == ["Unknown group 'nope' (yours: none)."]
    assert not VM.objects.exists()


def test_create_in_a_group_you_are_not_in_is_forbidden(as_alice):
    Group.objects.create(name="others")

    response = create(as_alice, group="others")

    assert response.status_code == 403
    assert response.json() == {"code": "forbidden", "detail": "You are not a member of the group others."}
    assert not VM.objects.exists()


# --- bad input: 400 with field messages, nothing created -------------------------------------------

BAD_INPUT = [
    ({"name": "<script>"}, "name", "Invalid name '<script>'"),
    ({"name": "a&b"}, "name", "Invalid name 'a&b'"),
    ({"name": "o'neil"}, "name", "Invalid name \"o'neil\""),
    ({"name": "Web-1"}, "name", "Invalid name 'Web-1'"),
    ({"name": "x" * 64}, "name", "Name is too long (64 characters, at most 63)."),
    ({"name": "   "}, "name", "Name is required."),
    ({"name": None}, "name", "This field may not be null."),
    ({"name": ["a"]}, "name", "Not a valid string."),
    ({"vcpus": -1}, "vcpus", "vCPUs must be between 1 and 16 (got -1)."),
    ({"vcpus": 0}, "vcpus", "vCPUs must be between 1 and 16 (got 0)."),
    ({"memory_mib": 10**12}, "memory_mib", "Memory must be between 64 and 65536 MiB"),
    ({"disk_gib": 10**40}, "disk_gib", "Disk must be between 1 and 2048 GiB"),
    ({"vcpus": "abc"}, "vcpus", "vCPUs must be a whole number (got 'abc')."),
    ({"memory_mib": "-5"}, "memory_mib", "Memory must be between"),
    ({"vcpus": True}, "vcpus", "vCPUs must be a whole number."),
    ({"disk_gib": 2.5}, "disk_gib", "Disk must be a whole number."),
    ({"disk_gib": [1]}, "disk_gib", "Disk must be a whole number."),
    ({"memory_mib": {"a": 1}}, "memory_mib", "Memory must be a whole number."),
    ({"image": "no-such-image"}, "image", "Unknown image 'no-such-image' (known: test-blank)."),
    ({"image": 999999}, "image", "Unknown image '999999'"),
    ({"flavor": "huge"}, "flavor", "Unknown flavor 'huge' (known: none)."),
    ({"description": "x" * 1001}, "description", "Description is too long (at most 1000 characters)."),
    ({"description": "bell\x07"}, "description", "Description contains control characters."),
    ({"start": "maybe"}, "start", "Must be a valid boolean."),
]


@pytest.mark.parametrize(("override", "field", "message"), BAD_INPUT,
                         ids=[f"{f}-{i}" for i, (_, f, _) in enumerate(BAD_INPUT)])
def test_bad_create_input_is_400_with_a_field_message_and_creates_nothing(as_alice, driver, override, field,
                                                                          message):
    domains_before = domain_uuids(driver)
    payload = {"name": "web-1", **SMALL, **override}

    response = as_alice.post("/api/vms/", payload, format="json")

    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid"
    assert any(m.startswith(message) for m in body["errors"][field]), body
    assert body["detail"].startswith(message)
    assert VM.objects.count() == 0
    assert Job.objects.count() == 0
    assert domain_uuids(driver) == domains_before


def test_missing_sizes_without_flavor_name_each_field(as_alice):
    response = as_alice.post("/api/vms/", {"name": "web-1"}, format="json")

    assert response.status_code == 400
    errors = response.json()["errors"]
    assert errors == {f: ["Choose a flavor or give this size."] for f in ("vcpus", "memory_mib", "disk_gib")}


def test_missing_name_and_malformed_json_are_400(as_alice):
    response = as_alice.post("/api/vms/", SMALL, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"name": ["This field is required."]}

    response = as_alice.post("/api/vms/", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"

    response = as_alice.post("/api/vms/", [1, 2], format="json")
    assert response.status_code == 400
    assert response.json()["errors"]["non_field_errors"][0].startswith("Invalid data. Expected a dictionary")
    assert not VM.objects.exists()


def test_duplicate_name_is_400_and_creates_nothing(as_alice, driver):
    assert create(as_alice).status_code == 202
    domains_before = domain_uuids(driver)

    response = create(as_alice)

    assert response.status_code == 400
    assert response.json()["errors"] == {"name": ["You already have a VM named 'web-1'."]}
    assert VM.objects.count() == 1
    assert domain_uuids(driver) == domains_before


# --- quota -----------------------------------------------------------------------------------------

def test_quota_exceeded_is_403_with_code_fields_and_message(as_alice, driver):
    domains_before = domain_uuids(driver)

    response = create(as_alice, vcpus=8)

    assert response.status_code == 403
    assert response.json() == {
        "code": "quota_exceeded",
        "detail": "Quota exceeded for vCPUs: requested 8, 0 of 4 in use",
        "resource": "vCPUs", "requested": 8, "limit": 4, "in_use": 0,
    }
    assert not VM.objects.exists()
    assert domain_uuids(driver) == domains_before


def test_fourth_vm_over_a_quota_of_three_is_refused(as_alice):
    for i in range(3):
        assert create(as_alice, name=f"vm-{i}").status_code == 202

    response = create(as_alice, name="vm-3")

    assert response.status_code == 403
    assert response.json()["detail"] == "Quota exceeded for VMs: requested 1, 3 of 3 in use"
    assert VM.objects.count() == 3


def test_quota_endpoint_shows_usage_of_the_user_and_their_groups(as_alice, alice):
    team = Group.objects.create(name="team")
    alice.groups.add(team)
    Quota.objects.create(group=team, max_vms=5, max_vcpus=8, max_memory_mib=4096, max_disk_gib=50)
    create(as_alice, name="mine")
    create(as_alice, name="ours", group="team", vcpus=2)

    body = as_alice.get("/api/quota/").json()

    mine = {r["resource"]: r for r in body["user"]["resources"]}
    assert body["user"]["name"] == "alice"
    assert mine["vms"] == {"resource": "vms", "label": "VMs", "unit": "", "used": 1, "limit": 3,
                           "remaining": 2, "percent": 33}
    assert mine["memory_mib"]["unit"] == "MiB" and mine["memory_mib"]["used"] == 128
    assert [g["name"] for g in body["groups"]] == ["team"]
    ours = {r["resource"]: r for r in body["groups"][0]["resources"]}
    assert (ours["vcpus"]["used"], ours["vcpus"]["limit"], ours["vcpus"]["remaining"]) == (2, 8, 6)
    assert body["vm_limits"]["vcpus"] == [1, 16]


# --- list, retrieve, update ------------------------------------------------------------------------

def test_list_is_paginated_filtered_and_shows_only_visible_vms(as_alice, bob, client_for, admin_user):
    create(as_alice, name="web-1")
    create(as_alice, name="db-1", start=False)
    assert create(client_for(bob), name="bob-1").status_code == 202

    body = as_alice.get("/api/vms/").json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 2
    assert [v["name"] for v in body["results"]] == ["db-1", "web-1"]

    assert [v["name"] for v in as_alice.get("/api/vms/?status=stopped").json()["results"]] == ["db-1"]
    assert [v["name"] for v in as_alice.get("/api/vms/?search=web").json()["results"]] == ["web-1"]
    # owner/host filters are for staff; for others they are ignored, never a way to see more
    assert as_alice.get("/api/vms/?owner=bob").json()["count"] == 2

    paged = as_alice.get("/api/vms/?page_size=1").json()
    assert paged["count"] == 2 and len(paged["results"]) == 1 and "page=2" in paged["next"]

    bad = as_alice.get("/api/vms/?status=sleeping")
    assert bad.status_code == 400
    assert bad.json()["errors"]["status"] == ['"sleeping" is not a valid choice.']

    staff = client_for(admin_user)
    assert [v["name"] for v in staff.get("/api/vms/?owner=bob").json()["results"]] == ["bob-1"]
    assert staff.get("/api/vms/?host=testhost").json()["count"] == 3
    assert staff.get("/api/vms/?host=elsewhere").json()["count"] == 0


def test_retrieve_by_id_and_uuid(as_alice):
    vm = create(as_alice).json()["vm"]

    by_id = as_alice.get(f"/api/vms/{vm['id']}/")
    by_uuid = as_alice.get(f"/api/vms/{vm['uuid']}/")

    assert by_id.status_code == by_uuid.status_code == 200
    assert by_id.json() == by_uuid.json()
    assert by_id.json()["id"] == vm["id"]
    assert by_id.json()["status"] == "running" and by_id.json()["status_label"] == "Running"


def test_other_users_vm_is_404_for_every_verb_and_stays_untouched(as_alice, bob, client_for, driver):
    vm = create(client_for(bob), name="bobs").json()["vm"]

    for method, suffix, data in [
        ("get", "", None), ("patch", "", {"name": "mine-now"}), ("delete", "", None),
        ("post", "actions/", {"action": "stop"}), ("post", "force_off/", None), ("get", "jobs/", None),
    ]:
        response = getattr(as_alice, method)(f"/api/vms/{vm['id']}/{suffix}", data, format="json")
        assert response.status_code == 404, (method, suffix, response.content)
        assert response.json() == {"code": "not_found", "detail": f"VM {vm['id']} not found."}
    assert as_alice.get(f"/api/vms/{vm['uuid']}/").json()["detail"] == f"VM {vm['uuid']} not found."
    assert as_alice.get("/api/vms/not-a-vm/").json()["code"] == "not_found"
    bobs = VM.objects.get(pk=vm["id"])
    assert (bobs.name, bobs.status) == ("bobs", "running")
    assert driver.domain_info(str(bobs.uuid)).state == PowerState.RUNNING


def test_patch_renames_and_redescribes_with_service_rules(as_alice, driver):
    vm = create(as_alice).json()["vm"]
    create(as_alice, name="taken")

    response = as_alice.patch(f"/api/vms/{vm['id']}/", {"name": "web-2", "description": "front"}, format="json")
    assert response.status_code == 200, response.content
    assert (response.json()["name"], response.json()["description"]) == ("web-2", "front")
    assert driver.domain_info(vm["uuid"]).title == "web-2"

    bad = as_alice.patch(f"/api/vms/{vm['id']}/", {"name": "Bad Name"}, format="json")
    assert bad.status_code == 400
    assert bad.json()["errors"]["name"][0].startswith("Invalid name 'Bad Name'")
    dup = as_alice.patch(f"/api/vms/{vm['id']}/", {"name": "taken"}, format="json")
    assert dup.status_code == 400
    assert dup.json()["errors"] == {"name": ["You already have a VM named 'taken'."]}
    assert VM.objects.get(pk=vm["id"]).name == "web-2"
    assert as_alice.put(f"/api/vms/{vm['id']}/", {"name": "x"}, format="json").status_code == 405


# --- actions ---------------------------------------------------------------------------------------

def test_actions_queue_jobs_noop_is_200_and_wrong_state_is_409(as_alice, driver):
    vm = create(as_alice).json()["vm"]
    url = f"/api/vms/{vm['id']}/actions/"

    noop = as_alice.post(url, {"action": "start"}, format="json")
    assert noop.status_code == 200
    assert noop.json()["message"] == "web-1 is already running."
    assert noop.json()["job"] is None

    stop = as_alice.post(url, {"action": "stop"}, format="json")
    assert stop.status_code == 202, stop.content
    assert stop.json()["job"]["kind"] == "vm.stop"
    assert VM.objects.get(pk=vm["id"]).status == "stopped"
    assert driver.domain_info(vm["uuid"]).state == PowerState.SHUTOFF

    again = as_alice.post(url, {"action": "stop"}, format="json")
    assert again.status_code == 409
    assert again.json() == {"code": "invalid_state", "detail": "Cannot stop web-1: it is already stopped.",
                            "status": "stopped"}

    unknown = as_alice.post(url, {"action": "explode"}, format="json")
    assert unknown.status_code == 400
    assert unknown.json()["errors"]["action"] == [
        "Unknown action 'explode' (one of: start, stop, force_off, reboot, pause, resume)."]
    assert as_alice.post(url, {}, format="json").json()["errors"] == {"action": ["This field is required."]}


def test_convenience_routes_drive_the_same_services(as_alice, driver):
    vm = create(as_alice, start=False).json()["vm"]
    base = f"/api/vms/{vm['uuid']}/"

    assert as_alice.post(base + "start/").status_code == 202
    assert driver.domain_info(vm["uuid"]).state == PowerState.RUNNING
    assert as_alice.post(base + "pause/").status_code == 202
    assert driver.domain_info(vm["uuid"]).state == PowerState.PAUSED
    paused_stop = as_alice.post(base + "stop/")
    assert paused_stop.status_code == 409
    assert paused_stop.json()["detail"] == "Cannot stop web-1: it is paused: resume it first, or use Force off."
    assert as_alice.post(base + "resume/").status_code == 202
    assert as_alice.post(base + "reboot/").status_code == 202
    assert VM.objects.get(pk=vm["id"]).status == "running"
    assert as_alice.post(base + "force_off/").status_code == 202
    assert driver.domain_info(vm["uuid"]).state == PowerState.SHUTOFF

    jobs = as_alice.get(base + "jobs/").json()
    assert [j["kind"] for j in jobs["results"]] == [
        "vm.force_off", "vm.reboot", "vm.resume", "vm.pause", "vm.start", "vm.create"]
    assert all(j["status"] == "succeeded" for j in jobs["results"])


# --- delete ----------------------------------------------------------------------------------------

def test_delete_is_202_and_removes_domain_and_volume_from_libvirt(as_alice, driver):
    vm = create(as_alice).json()["vm"]
    row = VM.objects.get(pk=vm["id"])
    volume = row.volumes.get()
    pool = volume.pool.name
    assert volume.name in {v.name for v in driver.list_volumes(pool=pool)}

    response = as_alice.delete(f"/api/vms/{vm['id']}/")

    assert response.status_code == 202, response.content
    assert response.json()["message"] == "Deleting web-1."
    assert response.json()["job"]["kind"] == "vm.delete"
    assert not driver.domain_exists(vm["uuid"])
    assert volume.name not in {v.name for v in driver.list_volumes(pool=pool)}
    assert VM.objects.get(pk=vm["id"]).status == "deleted"
    assert as_alice.get(f"/api/vms/{vm['id']}/").status_code == 404
    assert as_alice.get("/api/vms/").json()["count"] == 0


# --- authentication --------------------------------------------------------------------------------

def test_token_auth_lets_scripts_in_and_anonymous_gets_401(alice, test_host):
    anonymous = APIClient()
    response = anonymous.get("/api/vms/")
    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided.",
                               "code": "not_authenticated"}
    assert response["WWW-Authenticate"] == "Token"
    assert anonymous.post("/api/vms/", {"name": "x", **SMALL}, format="json").status_code == 401

    bad = anonymous.post("/api/auth/token/", {"username": "alice", "password": "wrong"}, format="json")
    assert bad.status_code == 400
    assert bad.json()["detail"] == "Unable to log in with provided credentials."

    token = anonymous.post("/api/auth/token/", {"username": "alice", "password": "pw-alice"},
                           format="json").json()["token"]
    assert token == Token.objects.get(user=alice).key

    script = APIClient()
    script.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    created = script.post("/api/vms/", {"name": "scripted", **SMALL}, format="json")
    assert created.status_code == 202, created.content
    assert script.get("/api/vms/").json()["results"][0]["created_via"] == "api"

    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Token nope")
    assert wrong.get("/api/vms/").json() == {"detail": "Invalid token.", "code": "authentication_failed"}


# --- images, flavors, hosts, schema ------------------------------------------------------------------

def test_images_and_flavors_hide_non_public_ones_from_users(as_alice, admin_user, client_for, test_host):
    from storage.models import Image

    image = Image.objects.get(name="test-blank")
    Image.objects.create(name="secret", title="Secret", pool=image.pool, volume_name="v", path="/x",
                         visibility="private")
    Flavor.objects.create(name="small", vcpus=1, memory_mib=256, disk_gib=2)
    Flavor.objects.create(name="staff-only", vcpus=8, memory_mib=8192, disk_gib=20, is_public=False)

    assert [i["name"] for i in as_alice.get("/api/images/").json()["results"]] == ["test-blank"]
    assert as_alice.get("/api/images/test-blank/").json()["is_default"] is True
    assert as_alice.get(f"/api/images/{image.pk}/").json()["name"] == "test-blank"
    assert as_alice.get("/api/images/secret/").json() == {"code": "not_found", "detail": "Image 'secret' not found."}
    assert [f["name"] for f in as_alice.get("/api/flavors/").json()["results"]] == ["small"]
    assert as_alice.get("/api/flavors/staff-only/").status_code == 404

    staff = client_for(admin_user)
    assert {i["name"] for i in staff.get("/api/images/").json()["results"]} == {"test-blank", "secret"}
    assert staff.get("/api/flavors/staff-only/").json()["vcpus"] == 8


def test_hosts_are_staff_only(as_alice, admin_user, client_for, test_host):
    denied = as_alice.get("/api/hosts/")
    assert denied.status_code == 403
    assert denied.json()["code"] == "permission_denied"

    staff = client_for(admin_user)
    hosts = staff.get("/api/hosts/").json()["results"]
    assert [(h["name"], h["uri"], h["status"]) for h in hosts] == [("testhost", "test:///default", "up")]
    assert staff.get("/api/hosts/testhost/").json()["name"] == "testhost"
    assert staff.get("/api/hosts/nope/").status_code == 404


def test_schema_and_docs_are_served_and_describe_the_vm_paths(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in ("/api/vms/", "/api/vms/{id}/", "/api/vms/{id}/actions/", "/api/vms/{id}/start/",
                 "/api/jobs/{id}/", "/api/quota/", "/api/auth/token/"):
        assert path in paths, path
    assert "202" in paths["/api/vms/"]["post"]["responses"]
    assert client.get("/api/docs/").status_code == 200


def test_schema_generates_without_warnings():
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")


def test_browsable_api_renders_for_a_signed_in_user(alice, test_host, client):
    client.force_login(alice)
    vm = create(client).json()["vm"]  # session auth works for the API too

    for url in ("/api/vms/", f"/api/vms/{vm['id']}/", f"/api/vms/{vm['id']}/jobs/", "/api/jobs/"):
        response = client.get(url, HTTP_ACCEPT="text/html")
        assert response.status_code == 200, url
        assert b"web-1" in response.content, url
    for url in ("/api/", "/api/quota/"):
        assert client.get(url, HTTP_ACCEPT="text/html").status_code == 200, url
    # POST-only: the page still renders, with the action form
    actions = client.get(f"/api/vms/{vm['id']}/actions/", HTTP_ACCEPT="text/html")
    assert actions.status_code == 405
    assert b'name="action"' in actions.content


# --- snapshots -------------------------------------------------------------------------------------

def test_snapshots_through_the_api(as_alice, driver):
    vm = create(as_alice).json()["vm"]
    base = f"/api/vms/{vm['id']}/snapshots/"
    assert vm["snapshots_url"].endswith(base)
    assert as_alice.get(base).json()["results"] == []

    taken = as_alice.post(base, {"name": "before", "description": "pre-upgrade"}, format="json")
    assert taken.status_code == 202, taken.content
    body = taken.json()
    assert body["snapshot"]["name"] == "before" and body["job"]["kind"] == "vm.snapshot.create"
    listed = as_alice.get(base).json()["results"]
    assert [(s["name"], s["status"], s["has_memory"], s["vm_state"]) for s in listed] == [
        ("before", "ready", True, "running")]
    assert as_alice.get(f"{base}before/").json()["description"] == "pre-upgrade"
    assert as_alice.get(listed[0]["url"]).json()["name"] == "before"  # by id too

    driver.destroy(vm["uuid"])
    reverted = as_alice.post(f"{base}before/revert/", format="json")
    assert reverted.status_code == 202 and reverted.json()["job"]["kind"] == "vm.snapshot.revert"
    assert as_alice.get(f"/api/vms/{vm['id']}/").json()["status"] == "running"
    assert driver.domain_info(vm["uuid"]).state == PowerState.RUNNING

    gone = as_alice.delete(f"{base}before/")
    assert gone.status_code == 202
    assert as_alice.get(base).json()["results"] == []
    assert driver.list_snapshots(vm["uuid"]) == []


def test_snapshot_errors_through_the_api(as_alice, bob, client_for, settings):
    vm = create(as_alice).json()["vm"]
    base = f"/api/vms/{vm['id']}/snapshots/"
    bad = as_alice.post(base, {"name": "a<b>"}, format="json")
    assert bad.status_code == 400 and "name" in bad.json()["errors"]
    assert as_alice.post(base, {"name": "one"}, format="json").status_code == 202
    dup = as_alice.post(base, {"name": "one"}, format="json")
    assert dup.status_code == 400 and "already has a snapshot named 'one'" in dup.json()["errors"]["name"][0]
    settings.SNAPSHOTS_PER_VM = 1
    full = as_alice.post(base, {"name": "two"}, format="json")
    assert full.status_code == 409 and "at most 1" in full.json()["detail"]
    assert as_alice.post(f"{base}nope/revert/").status_code == 404
    assert as_alice.delete(f"{base}nope/").status_code == 404
    as_bob = client_for(bob)
    assert as_bob.get(base).status_code == 404
    assert as_bob.post(f"{base}one/revert/").status_code == 404
    assert as_bob.delete(f"{base}one/").status_code == 404
    assert [s["name"] for s in as_alice.get(base).json()["results"]] == ["one"]


def test_token_endpoint_is_throttled_against_password_guessing(alice, test_host):
    from django.core.cache import cache

    cache.clear()
    anonymous = APIClient()
    # Guesses at ten usernames (one username's fifth failure would lock it out first: test_login_lockout).
    for n in range(10):
        wrong = anonymous.post("/api/auth/token/", {"username": f"user-{n}", "password": "guess"}, format="json")
        assert wrong.status_code == 400
    refused = anonymous.post("/api/auth/token/", {"username": "alice", "password": "pw-alice"}, format="json")
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled" and "available in" in refused.json()["detail"]
    assert int(refused["Retry-After"]) > 0
    cache.clear()
    assert anonymous.post("/api/auth/token/", {"username": "alice", "password": "pw-alice"},
                          format="json").status_code == 200
