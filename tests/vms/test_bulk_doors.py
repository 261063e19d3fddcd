"""Bulk creation's doors (issue #14) on libvirt's test driver: REST API (with the Idempotency-Key header and
the jobs API's parent/children), web form and job page, Django admin, Slack and the CLI."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from portal.choices import JobStatus
from portal.models import Job
from vms.choices import VMStatus
from vms.models import VM

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"count": 3, "name_pattern": "lab-{n:02}", "vcpus": 1, "memory_mib": 128, "disk_gib": 1}


def test_api_bulk_create_replay_and_mismatch(test_host, alice, client_for):
    api = client_for(alice)
    r = api.post("/api/vms/bulk/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="class-1")
    assert r.status_code == 202, r.content
    body = r.json()
    assert (body["requested"], body["created"], body["replayed"]) == (3, 3, False)
    assert body["message"] == "Creating 3 VMs."
    assert r["Location"].endswith(f"/api/jobs/{body['job']['id']}/")
    assert len(body["vms"]) == 3
    parent = Job.objects.get(pk=body["job"]["id"])
    assert parent.kind == "vm.bulk_create" and parent.status == JobStatus.SUCCEEDED and parent.via == "api"
    # A replay: same key, same body -> 200, the same parent job, nothing new.
    again = api.post("/api/vms/bulk/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="class-1")
    assert again.status_code == 200 and again.json()["job"]["id"] == body["job"]["id"]
    assert again.json()["replayed"] is True and sorted(again.json()["vms"]) == sorted(body["vms"])
    assert VM.objects.count() == 3
    # The key as a body field works the same.
    again = api.post("/api/vms/bulk/", {**BODY, "idempotency_key": "class-1"}, format="json")
    assert again.status_code == 200
    # Same key, other parameters: 422 with a clear message.
    other = api.post("/api/vms/bulk/", {**BODY, "count": 2}, format="json", HTTP_IDEMPOTENCY_KEY="class-1")
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"
    assert "already used for a different request" in other.json()["detail"]
    # The jobs API shows the parent with its children.
    job = api.get(f"/api/jobs/{parent.pk}/").json()
    assert job["children_count"] == 3 and job["parent"] is None
    children = api.get("/api/jobs/", {"parent": str(parent.pk)}).json()["results"]
    assert len(children) == 3 and {c["parent"] for c in children} == {str(parent.pk)}
    listed = {j["id"]: j for j in api.get("/api/jobs/").json()["results"]}
    assert listed[str(parent.pk)]["children_count"] == 3
    vm_jobs = api.get(f"/api/vms/{body['vms'][0]}/jobs/").json()
    vm_jobs = vm_jobs["results"] if isinstance(vm_jobs, dict) else vm_jobs
    assert [(j["kind"], j["parent"], j["children_count"]) for j in vm_jobs] == [("vm.create", str(parent.pk), 0)]


def test_api_bulk_refusals_are_json(test_host, alice, client_for):
    api = client_for(alice)
    r = api.post("/api/vms/bulk/", {**BODY, "count": 4}, format="json")  # alice may have 3 VMs
    assert r.status_code == 403 and r.json()["code"] == "quota_exceeded" and "requested 4" in r.json()["detail"]
    r = api.post("/api/vms/bulk/", {**BODY, "name_pattern": "lab-{n.real}"}, format="json")
    assert r.status_code == 400 and "the only field is {n}" in r.json()["detail"]
    r = api.post("/api/vms/bulk/", {**BODY, "name_pattern": "lab"}, format="json")
    assert r.status_code == 400 and "needs {n}" in r.json()["detail"]
    r = api.post("/api/vms/bulk/", {**BODY, "owner": "bob"}, format="json")
    assert r.status_code == 403
    r = api.post("/api/vms/bulk/", {**BODY, "dry_run": True}, format="json")  # an invented field makes nothing
    assert r.status_code == 400 and "dry_run" in r.json()["errors"] and not VM.objects.exists()
    r = api.post("/api/vms/bulk/", {**BODY, "count": 5, "partial": True}, format="json")
    assert r.status_code == 202 and r.json()["created"] == 3 and "VMs 0 of 3 in use" in r.json()["why_fewer"]
    assert not VM.objects.exclude(name__in=["lab-01", "lab-02", "lab-03"]).exists()


def test_api_schema_documents_bulk(test_host, alice, client_for):
    schema = client_for(alice).get("/api/schema/", {"format": "json"}).json()
    op = schema["paths"]["/api/vms/bulk/"]["post"]
    assert {"202", "200", "403", "422"} <= set(op["responses"])
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in op["parameters"])


def test_cli_bulk_create(test_host, alice):
    out, err = io.StringIO(), io.StringIO()
    call_command("vm", "--user", "alice", "bulk-create", "cli-{n}", "2", "--vcpus", "1", "--memory-mib", "128",
                 "--disk-gib", "1", "--idempotency-key", "k-cli", stdout=out, stderr=err)
    assert "Creating 2 VMs" in out.getvalue()
    assert set(VM.objects.values_list("name", flat=True)) == {"cli-1", "cli-2"}
    parent = Job.objects.get(kind="vm.bulk_create")
    assert parent.via == "cli" and parent.status == JobStatus.SUCCEEDED
    out = io.StringIO()
    call_command("vm", "--user", "alice", "bulk-create", "cli-{n}", "2", "--vcpus", "1", "--memory-mib", "128",
                 "--disk-gib", "1", "--idempotency-key", "k-cli", stdout=out, stderr=err)
    assert "already made" in out.getvalue() and VM.objects.count() == 2


def test_web_bulk_form_and_parent_job_page(test_host, alice, client):
    client.force_login(alice)
    page = client.get("/vms/bulk/")
    assert page.status_code == 200 and b"Create several" in page.content
    r = client.post("/vms/bulk/", {"count": "2", "name_pattern": "web-{n}", "start_number": "1", "vcpus": "1",
                                   "memory_mib": "128", "disk_gib": "1", "image": "", "flavor": "", "clone": "thin",
                                   "start": "on"})
    assert r.status_code == 302, r.content.decode()[:3000]
    parent = Job.objects.get(kind="vm.bulk_create")
    assert r["Location"] == f"/jobs/{parent.pk}/"
    assert set(VM.objects.values_list("status", flat=True)) == {VMStatus.RUNNING}
    page = client.get(f"/jobs/{parent.pk}/").content.decode()
    assert "web-1" in page and "web-2" in page and 'role="progressbar"' in page and "2 jobs in this batch" in page
    listing = client.get("/jobs/").content.decode()
    assert "Create several" in listing and "· 2 jobs" in listing
    child = parent.children.first()
    assert f"/jobs/{parent.pk}/" in client.get(f"/jobs/{child.pk}/").content.decode()
    assert "Create several" in client.get("/").content.decode()  # the VMs page links to the form
    # A refusal is shown on the form, next to the field, and nothing is created.
    r = client.post("/vms/bulk/", {"count": "2", "name_pattern": "web", "vcpus": "1", "memory_mib": "128",
                                   "disk_gib": "1", "clone": "thin"})
    assert r.status_code == 200 and "needs {n}" in r.content.decode().replace("&#x27;", "'").replace("&lbrace;", "{")
    assert VM.objects.count() == 2


def test_admin_bulk_create_for_a_user(test_host, admin_user, alice, client):
    client.force_login(admin_user)
    page = client.get("/admin/vms/vm/bulk-create/")
    assert page.status_code == 200
    r = client.post("/admin/vms/vm/bulk-create/", {"owner": alice.pk, "count": "2", "name_pattern": "adm-{n}",
                                                    "start_number": "1", "vcpus": "1", "memory_mib": "128",
                                                    "disk_gib": "1", "clone": "thin", "start": "on"})
    assert r.status_code == 302, r.content.decode()[:3000]
    assert set(VM.objects.values_list("owner__username", "name")) == {("alice", "adm-1"), ("alice", "adm-2")}
    parent = Job.objects.get(kind="vm.bulk_create")
    assert parent.via == "admin"
    page = client.get(f"/admin/portal/job/{parent.pk}/change/").content.decode()
    assert "adm-1" in page and "adm-2" in page
    child = parent.children.first()
    assert f"/admin/portal/job/{parent.pk}/change/" in client.get(f"/admin/portal/job/{child.pk}/change/").content.decode()
    # Refused: the owner's quota (alice may have 3 VMs) shown on the form; nothing created.
    r = client.post("/admin/vms/vm/bulk-create/", {"owner": alice.pk, "count": "2", "name_pattern": "more-{n}",
                                                    "vcpus": "1", "memory_mib": "128", "disk_gib": "1"})
    assert r.status_code == 400 and "Quota exceeded for VMs" in r.content.decode()
    assert VM.objects.count() == 2


def test_bulk_takes_a_lease_like_a_single_create(test_host, alice, client_for, settings):
    """The bulk body inherits create's lease_days/expires_at: they reach the service (no 500), each VM gets
    the lease, the policy refuses beyond it with nothing created, and the key remembers the lease."""
    settings.LEASE_MAX_DAYS = 10
    api = client_for(alice)
    r = api.post("/api/vms/bulk/", {**BODY, "count": 2, "lease_days": 30}, format="json")
    assert r.status_code == 400 and r.json()["code"] == "invalid", r.content
    assert VM.objects.count() == 0 and not Job.objects.exists()
    r = api.post("/api/vms/bulk/", {**BODY, "count": 2, "lease_days": 3}, format="json",
                 HTTP_IDEMPOTENCY_KEY="leased")
    assert r.status_code == 202, r.content
    vms = list(VM.objects.all())
    assert len(vms) == 2 and all(vm.expires_at is not None for vm in vms)
    assert {(vm.expires_at - vm.created_at).days for vm in vms} == {2}  # 3 days less the seconds in between
    other = api.post("/api/vms/bulk/", {**BODY, "count": 2, "lease_days": 4}, format="json",
                     HTTP_IDEMPOTENCY_KEY="leased")
    assert other.status_code == 422
    call_command("vm", "--user", "alice", "bulk-create", "cli-{n}", "1", "--vcpus", "1", "--memory-mib", "128",
                 "--disk-gib", "1", "--lease", "2d", stdout=io.StringIO(), stderr=io.StringIO())
    cli = VM.objects.get(name="cli-1")
    assert cli.expires_at is not None and (cli.expires_at - cli.created_at).days == 1
