"""The jobs API: who sees which job, what a job shows, and that tracebacks are for staff only."""

from __future__ import annotations

import uuid

import pytest
from rest_framework.test import APIClient

from portal.models import Job

pytestmark = pytest.mark.django_db(transaction=True)

SMALL = {"vcpus": 1, "memory_mib": 128, "disk_gib": 1}


@pytest.fixture
def client_for(test_host):
    def make(user) -> APIClient:
        client = APIClient()
        client.force_authenticate(user)
        return client

    return make


def test_jobs_list_shows_your_jobs_newest_first_and_not_other_peoples(alice, bob, client_for):
    as_alice, as_bob = client_for(alice), client_for(bob)
    vm = as_alice.post("/api/vms/", {"name": "web-1", **SMALL}, format="json").json()["vm"]
    as_alice.post(f"/api/vms/{vm['id']}/stop/")
    as_bob.post("/api/vms/", {"name": "bob-1", **SMALL}, format="json")

    body = as_alice.get("/api/jobs/").json()

    assert set(body) == {"count", "next", "previous", "results"}
    assert [(j["kind"], j["target_name"], j["actor"], j["via"]) for j in body["results"]] == [
        ("vm.stop", "web-1", "alice", "api"), ("vm.create", "web-1", "alice", "api")]
    assert [j["kind"] for j in as_alice.get("/api/jobs/?kind=vm.create").json()["results"]] == ["vm.create"]
    assert as_alice.get("/api/jobs/?status=failed").json()["count"] == 0
    assert as_alice.get("/api/jobs/?status=nope").status_code == 400


def test_job_detail_reports_status_progress_and_log(alice, client_for):
    as_alice = client_for(alice)
    created = as_alice.post("/api/vms/", {"name": "web-1", **SMALL}, format="json").json()

    job = as_alice.get(created["job"]["url"]).json()

    assert job["id"] == created["job"]["id"]
    assert job["status"] == "succeeded"
    assert job["progress"] == 100
    assert "Defining the domain" in job["log"]
    assert job["result"]["domain"] == created["vm"]["domain_name"]
    assert job["target_url"] == created["vm"]["url"]
    assert job["started_at"] and job["finished_at"]


def test_other_users_job_is_404_and_a_bad_id_too(alice, bob, client_for):
    created = client_for(bob).post("/api/vms/", {"name": "bob-1", **SMALL}, format="json").json()
    as_alice = client_for(alice)

    response = as_alice.get(f"/api/jobs/{created['job']['id']}/")

    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "detail": f"Job {created['job']['id']} not found."}
    assert as_alice.get("/api/jobs/not-a-uuid/").json()["code"] == "not_found"
    assert as_alice.get(f"/api/jobs/{uuid.uuid4()}/").status_code == 404


def test_group_members_see_jobs_of_shared_vms(alice, make_user, client_for):
    from django.contrib.auth.models import Group

    team = Group.objects.create(name="team")
    alice.groups.add(team)
    carol = make_user("carol")
    carol.groups.add(team)
    created = client_for(alice).post("/api/vms/", {"name": "shared", "group": "team", **SMALL},
                                     format="json").json()

    as_carol = client_for(carol)
    assert as_carol.get(created["job"]["url"]).json()["kind"] == "vm.create"
    assert [j["kind"] for j in as_carol.get(f"/api/vms/{created['vm']['id']}/jobs/").json()["results"]] == [
        "vm.create"]


def test_traceback_is_shown_to_staff_only(alice, admin_user, client_for):
    as_alice = client_for(alice)
    created = as_alice.post("/api/vms/", {"name": "web-1", **SMALL}, format="json").json()
    # A job that errored (a bug) keeps its traceback for admins.
    Job.objects.filter(pk=created["job"]["id"]).update(status="errored", error="boom",
                                                       traceback="Traceback (most recent call last): ...")

    mine = as_alice.get(created["job"]["url"]).json()
    staff = client_for(admin_user).get(created["job"]["url"]).json()

    assert (mine["status"], mine["error"], mine["traceback"]) == ("errored", "boom", "")
    assert staff["traceback"] == "Traceback (most recent call last): ..."
    assert client_for(admin_user).get("/api/jobs/").json()["results"][0]["traceback"].startswith("Traceback")
    assert as_alice.get("/api/jobs/").json()["results"][0]["traceback"] == ""


def test_jobs_need_authentication():
    response = APIClient().get("/api/jobs/")

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_the_placement_explanation_is_for_staff_only(alice, admin_user, client_for):
    """Issue #12 keeps the scheduler's explanation (every host's free memory and scores) on the job: a
    VM's owner reads the job without it; administrators see it."""
    created = client_for(alice).post("/api/vms/", {"name": "web-1", **SMALL}, format="json").json()
    url = created["job"]["url"]
    job = client_for(alice).get(url).json()
    assert "placement" not in job["params"] and job["params"]["start"] is not None
    staff = client_for(admin_user).get(url).json()
    assert staff["params"]["placement"]["chosen"]
