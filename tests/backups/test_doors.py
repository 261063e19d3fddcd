"""The backups doors on libvirt's test driver: REST API, web panel and My backups page, CLI verbs, admin.

Reads and permissions use backup rows made here (the rows the jobs write); starting, restoring, deleting
and schedules go through backups.services (the core work proves the real backups on qemu:///system).
Jobs run on commit (ImmediateBackend), hence the transactional database.
"""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from backups.models import Backup, BackupSchedule
from quotas.models import Quota
from vms.models import VM

pytestmark = pytest.mark.django_db(transaction=True)

SECRET_PATH = "/var/lib/vmportal/backups/secret-place/vda.qcow2"


@pytest.fixture(autouse=True)
def _doors():
    """The doors' registrations (BackupsConfig.ready calls the same; registering twice is harmless)."""
    from backups import doors

    doors.register()


@pytest.fixture
def vm(alice, test_host):
    from portal.choices import Via
    from vms.services import vm_create

    result = vm_create(actor=alice, via=Via.API, name="web-1", vcpus=1, memory_mib=128, disk_gib=1)
    return VM.objects.get(pk=result.vm.pk)


def make_backup(vm, *, owner=None, status="ready", kind="full", parent=None, mode="push", vm_name=None, **extra):
    return Backup.objects.create(
        vm=vm, vm_name=vm_name or vm.name, owner=owner or vm.owner, kind=kind, mode=mode, parent=parent,
        status=status, size_bytes=3 * 1024 * 1024, progress=100 if status == "ready" else 40,
        disks=[{"target": "vda", "volume": "web-1-vda-secret.qcow2", "path": SECRET_PATH,
                "capacity_bytes": 1 << 30, "size_bytes": 3 << 20, "format": "qcow2", "readonly": False,
                "bus": "virtio", "boot": True}], **extra)


@pytest.fixture
def api(client_for, alice):
    return client_for(alice)


# --- REST API: reads and permissions --------------------------------------------------------------

def test_api_lists_and_shows_backups_without_host_paths(api, vm):
    full = make_backup(vm)
    incr = make_backup(vm, kind="incremental", parent=full)

    body = api.get("/api/backups/").json()
    assert [b["id"] for b in body["results"]] == [incr.pk, full.pk]
    detail = api.get(f"/api/backups/{incr.pk}/").json()
    assert detail["parent"] == full.pk and detail["kind"] == "incremental" and detail["status"] == "ready"
    assert detail["size_bytes"] == 3 << 20 and detail["vm"] == vm.pk and detail["vm_name"] == "web-1"
    assert detail["disks"] == [{"target": "vda", "capacity_bytes": 1 << 30, "size_bytes": 3 << 20,
                                "format": "qcow2", "readonly": False, "bus": "virtio", "boot": True}]
    assert "secret" not in str(detail)
    assert detail["nbd_uri"] == ""
    by_uuid = api.get(f"/api/backups/{incr.uuid}/").json()
    assert by_uuid["id"] == incr.pk
    on_vm = api.get(f"/api/vms/{vm.pk}/backups/").json()
    assert [b["id"] for b in on_vm["results"]] == [incr.pk, full.pk]
    assert api.get(f"/api/backups/?vm={vm.pk}").json()["count"] == 2
    assert api.get("/api/backups/?vm=999999").json()["count"] == 0
    assert api.get("/api/backups/?kind=full").json()["count"] == 1
    bad = api.get("/api/backups/?vm=web-1")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid"


def test_api_pull_mode_shows_the_nbd_uri(api, vm):
    pulled = make_backup(vm, mode="pull", status="running", nbd_uri="nbd://127.0.0.1:10809")
    assert api.get(f"/api/backups/{pulled.pk}/").json()["nbd_uri"] == "nbd://127.0.0.1:10809"


def test_other_users_backups_and_vms_are_404(client_for, bob, vm):
    backup = make_backup(vm)
    as_bob = client_for(bob)

    assert as_bob.get("/api/backups/").json()["count"] == 0
    for response in (as_bob.get(f"/api/backups/{backup.pk}/"), as_bob.delete(f"/api/backups/{backup.pk}/"),
                     as_bob.post(f"/api/backups/{backup.pk}/restore/", {"name": "mine"}, format="json"),
                     as_bob.post(f"/api/backups/{backup.pk}/finish/"),
                     as_bob.get(f"/api/vms/{vm.pk}/backups/"),
                     as_bob.post(f"/api/vms/{vm.pk}/backups/", {"kind": "full"}, format="json"),
                     as_bob.put(f"/api/vms/{vm.pk}/backup-schedule/", {"interval_hours": 6}, format="json")):
        assert response.status_code == 404, response.content
        assert response.json()["code"] == "not_found"
    assert Backup.objects.count() == 1 and not BackupSchedule.objects.exists()


def test_backups_of_a_deleted_vm_stay_visible_to_their_owner(api, vm):
    backup = make_backup(vm)
    Backup.objects.filter(pk=backup.pk).update(vm=None)

    body = api.get(f"/api/backups/{backup.pk}/").json()
    assert body["vm"] is None and body["vm_url"] is None and body["vm_name"] == "web-1"


def test_admin_sees_every_backup(client_for, admin_user, vm):
    make_backup(vm)
    assert client_for(admin_user).get("/api/backups/").json()["count"] == 1


def test_schedule_is_404_until_set(api, vm):
    response = api.get(f"/api/vms/{vm.pk}/backup-schedule/")
    assert response.status_code == 404 and "no backup schedule" in response.json()["detail"]


def test_openapi_schema_lists_the_backup_routes(api):
    schema = api.get("/api/schema/?format=json").json()
    for route in ("/api/backups/", "/api/backups/{id}/", "/api/backups/{id}/finish/", "/api/backups/{id}/restore/",
                  "/api/vms/{vm_id}/backups/", "/api/vms/{vm_id}/backup-schedule/"):
        assert route in schema["paths"], route


# --- REST API: through the services ----------------------------------------------------------------

def test_api_refuses_a_bad_kind_and_mode_with_400(api, vm):
    for payload in ({"kind": "differential"}, {"mode": "sideways"}):
        response = api.post(f"/api/vms/{vm.pk}/backups/", payload, format="json")
        assert response.status_code == 400, response.content
        assert response.json()["code"] == "invalid"
    assert not Backup.objects.exists()


def test_api_refuses_a_backup_beyond_the_backup_space_quota(api, alice, vm):
    Quota.objects.filter(user=alice).update(max_backup_gib=0)
    response = api.post(f"/api/vms/{vm.pk}/backups/", {"kind": "full"}, format="json")
    assert response.status_code in (403, 409), response.content
    if response.status_code == 403:
        assert response.json()["code"] == "quota_exceeded"
    assert not Backup.objects.filter(status__in=["queued", "running", "ready"]).exists()


def test_api_backup_then_restore_to_a_new_vm(api, vm):
    started = api.post(f"/api/vms/{vm.pk}/backups/", {"kind": "full", "note": "before upgrade"}, format="json")
    assert started.status_code == 202, started.content
    body = started.json()
    assert body["job"]["kind"].startswith("backup.") and started["Location"] == body["backup"]["url"]
    backup = api.get(body["backup"]["url"]).json()
    assert backup["status"] == "ready" and backup["note"] == "before upgrade", backup
    restored = api.post(f"/api/backups/{backup['id']}/restore/", {"name": "web-2"}, format="json")
    assert restored.status_code == 202, restored.content
    assert restored.json()["vm"]["name"] == "web-2" and restored["Location"] == restored.json()["vm"]["url"]
    assert VM.objects.filter(name="web-2", owner=vm.owner).exists()


def test_api_restore_refuses_bad_input(api, vm):
    from backups.services import backup_create
    from portal.choices import Via

    backup, _job, _message = backup_create(actor=vm.owner, via=Via.API, vm=vm, kind="full")
    bad_name = api.post(f"/api/backups/{backup.pk}/restore/", {"name": "Not A Name!"}, format="json")
    assert bad_name.status_code == 400, bad_name.content
    in_place_running = api.post(f"/api/backups/{backup.pk}/restore/", {"in_place": True}, format="json")
    assert in_place_running.status_code in (400, 409), in_place_running.content
    assert VM.objects.filter(owner=vm.owner).count() == 1


def test_api_delete_refuses_a_backup_an_incremental_depends_on(api, vm):
    full = make_backup(vm)
    make_backup(vm, kind="incremental", parent=full)
    response = api.delete(f"/api/backups/{full.pk}/")
    assert response.status_code == 409, response.content
    assert Backup.objects.filter(pk=full.pk).exists()


def test_api_schedule_set_read_and_remove(api, vm):
    put = api.put(f"/api/vms/{vm.pk}/backup-schedule/",
                  {"interval_hours": 12, "incrementals": 3, "keep_chains": 2}, format="json")
    assert put.status_code == 200, put.content
    assert (put.json()["interval_hours"], put.json()["incrementals"], put.json()["keep_chains"]) == (12, 3, 2)
    assert api.get(f"/api/vms/{vm.pk}/backup-schedule/").json()["interval_hours"] == 12
    bad = api.put(f"/api/vms/{vm.pk}/backup-schedule/", {"interval_hours": "often"}, format="json")
    assert bad.status_code == 400, bad.content
    assert api.delete(f"/api/vms/{vm.pk}/backup-schedule/").status_code == 204
    assert not BackupSchedule.objects.filter(vm=vm).exists()


# --- web ------------------------------------------------------------------------------------------

def test_vm_page_has_the_backups_panel_and_my_backups_lists_deleted_vms(client, alice, vm):
    client.force_login(alice)
    make_backup(vm)
    gone = make_backup(vm, vm_name="old-vm")
    Backup.objects.filter(pk=gone.pk).update(vm=None)

    page = client.get(f"/vms/{vm.pk}/").content.decode()
    assert 'id="backups"' in page and 'href="#backups"' in page
    assert "Back up now" in page and "Restore to new VM" in page and SECRET_PATH not in page
    panel = client.get(f"/backups/vm/{vm.pk}/")
    assert panel.status_code == 200 and b"data-backups-panel" in panel.content
    mine = client.get("/backups/?deleted=1").content.decode()
    assert "old-vm" in mine and "(deleted)" in mine and "Restore to new VM" in mine


def test_web_panel_of_someone_elses_vm_is_404(client, bob, vm):
    client.force_login(bob)
    assert client.get(f"/backups/vm/{vm.pk}/").status_code == 404


def test_web_refusals_come_back_as_messages(client, alice, vm):
    client.force_login(alice)
    backup = make_backup(vm)
    response = client.post(f"/backups/{backup.pk}/restore/", {"name": "Bad Name"}, follow=True)
    assert response.status_code == 200
    assert VM.objects.filter(owner=alice).count() == 1
    assert list(response.context["messages"])


# --- CLI ------------------------------------------------------------------------------------------

def run(*args) -> str:
    out = io.StringIO()
    call_command("vm", *args, stdout=out)
    return out.getvalue()


def test_cli_lists_backups(alice, vm):
    full = make_backup(vm)
    make_backup(vm, kind="incremental", parent=full)
    listed = run("--user", "alice", "backups")
    assert "web-1" in listed and "incremental" in listed and f"on #{full.pk}" in listed and "3 MiB" in listed
    assert SECRET_PATH not in listed
    assert run("--user", "alice", "backups", "web-1").count("web-1") == 2


def test_cli_refusals_have_exit_codes(alice, bob, vm):
    backup = make_backup(vm)
    with pytest.raises(CommandError) as missing:
        run("--user", "bob", "restore", str(backup.pk), "--name", "stolen")
    assert missing.value.returncode == 3
    with pytest.raises(CommandError) as invalid:
        run("--user", "alice", "backup", "web-1", "--incremental", "--full")
    assert invalid.value.returncode != 0


def test_cli_schedule(alice, vm):
    out = run("--user", "alice", "backup-schedule", "web-1", "--every", "12", "--incrementals", "3", "--keep", "2")
    assert "every 12 h" in out
    assert "every 12 h" in run("--user", "alice", "backup-schedule", "web-1")
    assert "no longer" in run("--user", "alice", "backup-schedule", "web-1", "--off")


# --- admin ----------------------------------------------------------------------------------------

def test_admin_pages(client, admin_user, vm):
    client.force_login(admin_user)
    backup = make_backup(vm)
    BackupSchedule.objects.create(vm=vm)
    for url in ("/admin/backups/backup/", f"/admin/backups/backup/{backup.pk}/change/",
                "/admin/backups/backupschedule/", "/admin/quotas/quota/"):
        response = client.get(url)
        assert response.status_code == 200, url
    assert b"web-1" in client.get("/admin/backups/backup/").content


@pytest.mark.django_db
def test_unicode_digits_and_huge_ids_are_404_or_400_not_500(client_for, alice):
    """"²".isdigit() is True but int("²") fails: backup ids and the ?vm= filter take ASCII digits only."""
    api = client_for(alice)
    for path in ("/api/backups/²/", f"/api/backups/{'9' * 5000}/"):
        assert api.get(path).status_code == 404
    for value in ("²", "9" * 5000):
        response = api.get("/api/backups/", {"vm": value})
        assert response.status_code == 400, response.content
