"""The doors for disks (issue #11): the VM page's Disks panel and "My disks", the REST API
(/api/vms/{id}/disks/, /api/disks/), `manage.py vm disk …` and the admin — all through vms.disks.

libvirt's test driver; jobs run on commit (ImmediateBackend), so a transactional database: a 202 or a
redirect means the job has run. VMs are stopped (no hot-plug needed here; the qemu tests of the disk
services prove hot-plug).
"""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from portal.exceptions import NotFound
from storage.models import Volume
from vms.models import VM, VMDisk

pytestmark = pytest.mark.django_db(transaction=True)

SMALL = {"vcpus": 1, "memory_mib": 128, "disk_gib": 1}


def _catalog_ready() -> bool:
    from vms import properties

    try:
        properties.validate_properties(device=properties.DISK, properties={}, actor=None)
        return bool(properties.property_catalog(properties.DISK))
    except NotImplementedError:
        return False


needs_properties = pytest.mark.skipif("not _catalog_ready()", reason="vms.properties is not implemented yet")


@pytest.fixture
def vm_of(test_host, client_for):
    """A stopped VM of `user`, made through the API: vm_of(alice) -> the API's VM body."""

    def make(user, name="web-1"):
        response = client_for(user).post("/api/vms/", {"name": name, **SMALL, "start": False}, format="json")
        assert response.status_code == 202, response.json()
        return response.json()["vm"]

    return make


def _add(client, vm, **body):
    return client.post(vm["disks_url"], body, format="json")


# --- REST API ---------------------------------------------------------------------------------------

def test_api_lists_adds_grows_detaches_and_deletes_a_disk(alice, client_for, vm_of):
    client = client_for(alice)
    vm = vm_of(alice)
    listed = client.get(vm["disks_url"]).json()["results"]
    assert [(d["target"], d["data_disk"]) for d in listed if d["target"] == "vda"] == [("vda", False)]

    added = _add(client, vm, size_gib=2, label="data1", bus="scsi")
    assert added.status_code == 202, added.json()
    body = added.json()
    assert body["disk"]["label"] == "data1" and body["disk"]["bus"] == "scsi" and body["disk"]["size_gib"] == 2
    assert body["disk"]["target"].startswith("sd") and body["job"]["id"]
    assert added["Location"] == body["disk"]["url"]

    one = client.get(f"{vm['disks_url']}data1/").json()
    assert one["status"] == "attached" and one["data_disk"] is True and one["shareable"] is False
    assert client.get(body["disk"]["url"]).json()["id"] == one["id"]

    same = client.patch(one["url"], {"size_gib": 2}, format="json")  # nothing to do: 200, no job
    assert same.status_code == 200 and same.json()["job"] is None and "already 2 GiB" in same.json()["message"]
    grown = client.patch(one["url"], {"size_gib": 3}, format="json")  # the test driver has no blockResize
    assert grown.status_code == 409 and "cannot grow disks" in grown.json()["detail"]
    assert client.get(one["url"]).json()["size_gib"] == 2

    removed = client.delete(one["url"])
    assert removed.status_code == 202, removed.json()
    assert not VMDisk.objects.filter(pk=one["id"]).exists()
    volumes = client.get("/api/disks/").json()["results"]
    assert [(v["label"], v["size_gib"], v["attachments"]) for v in volumes] == [("data1", 2, [])]

    again = _add(client, vm, volume="data1")  # attach it again, by label
    assert again.status_code == 202, again.json()
    assert client.get("/api/disks/data1/").json()["attachments"][0]["vm"] == "web-1"
    busy = client.delete(f"/api/disks/{volumes[0]['id']}/")
    assert busy.status_code == 409 and "detach it first" in busy.json()["detail"]

    gone = client.delete(f"{vm['disks_url']}data1/?delete_volume=true")
    assert gone.status_code == 202, gone.json()
    assert client.get("/api/disks/").json()["results"] == []
    assert not Volume.objects.filter(label="data1").exists()


def test_api_deletes_a_detached_data_disk(alice, client_for, vm_of):
    client = client_for(alice)
    vm = vm_of(alice)
    disk = _add(client, vm, size_gib=1, label="scratch").json()["disk"]
    client.delete(disk["url"])
    deleted = client.delete("/api/disks/scratch/")
    assert deleted.status_code in (200, 202), deleted.json()
    assert deleted.json()["disk"]["label"] == "scratch"
    assert not Volume.objects.filter(label="scratch").exists()


def test_api_others_vms_and_disks_are_404(alice, bob, client_for, vm_of):
    vm = vm_of(alice)
    disk = _add(client_for(alice), vm, size_gib=1, label="mine").json()["disk"]
    other = client_for(bob)
    for response in (other.get(vm["disks_url"]), _add(other, vm, size_gib=1), other.get(disk["url"]),
                     other.patch(disk["url"], {"size_gib": 5}, format="json"), other.delete(disk["url"]),
                     other.get(f"/api/disks/{disk['volume']}/"), other.delete(f"/api/disks/{disk['volume']}/")):
        assert response.status_code == 404, response.json()
        assert response.json()["code"] == "not_found"
    assert other.get("/api/disks/").json()["results"] == []
    assert VMDisk.objects.filter(pk=disk["id"], volume__capacity_gib=1).exists()


@pytest.mark.parametrize(("body", "field"), [
    ({}, "size_gib"),
    ({"size_gib": "lots"}, "size_gib"),
    ({"size_gib": 1, "bus": "ide"}, "bus"),
    ({"size_gib": 1, "label": "bad label!"}, "label"),
    ({"size_gib": 1, "readonly": True}, "readonly"),
    ({"size_gib": 1, "volume": "data1"}, "size_gib"),
    ({"size_gib": 1, "readonly": "maybe"}, "readonly"),
])
def test_api_bad_input_is_a_400_naming_the_field_and_adds_nothing(alice, client_for, vm_of, body, field):
    client = client_for(alice)
    vm = vm_of(alice)
    response = _add(client, vm, **body)
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "invalid" and field in response.json()["errors"]
    assert VMDisk.objects.filter(vm_id=vm["id"]).count() == 1  # the boot disk only
    assert not Volume.objects.filter(owner=alice).exists()


def test_api_patch_and_delete_refusals(alice, client_for, vm_of):
    client = client_for(alice)
    vm = vm_of(alice)
    disk = _add(client, vm, size_gib=2, label="d").json()["disk"]
    empty = client.patch(disk["url"], {}, format="json")
    assert empty.status_code == 400 and empty.json()["code"] == "invalid"
    shrink = client.patch(disk["url"], {"size_gib": 1}, format="json")
    assert shrink.status_code == 400 and "size_gib" in shrink.json()["errors"]
    flag = client.delete(f"{disk['url']}?delete_volume=maybe")
    assert flag.status_code == 400 and "delete_volume" in flag.json()["errors"]
    boot = client.delete(f"{vm['disks_url']}vda/")
    assert boot.status_code == 409 and "cannot be detached" in boot.json()["detail"]
    assert client.get(f"{vm['disks_url']}nope/").status_code == 404
    assert VMDisk.objects.filter(vm_id=vm["id"]).count() == 2


def test_api_a_disk_beyond_the_quota_is_refused_and_leaves_nothing(alice, client_for, vm_of):
    client = client_for(alice)
    vm = vm_of(alice)
    response = _add(client, vm, size_gib=50)
    assert response.status_code == 403, response.json()
    assert response.json()["code"] == "quota_exceeded" and response.json()["limit"] == 20
    assert not Volume.objects.filter(owner=alice).exists()
    assert _add(client, vm, size_gib=19).status_code == 202  # 1 GiB boot disk + 19: the quota's 20
    full = _add(client, vm, size_gib=1)
    assert full.status_code == 403 and full.json()["in_use"] == 20


@needs_properties
def test_api_sets_properties_and_refuses_unknown_ones(admin_user, client_for, vm_of):
    client = client_for(admin_user)
    vm = vm_of(admin_user)
    disk = _add(client, vm, size_gib=1, label="tuned").json()["disk"]
    set_ = client.patch(disk["url"], {"properties": {"serial": "abc123"}}, format="json")
    assert set_.status_code in (200, 202), set_.json()
    assert client.get(disk["url"]).json()["properties"]["serial"] == "abc123"
    bad = client.patch(disk["url"], {"properties": {"colour": "blue"}}, format="json")
    assert bad.status_code == 400 and "properties" in bad.json()["errors"]


def test_api_schema_documents_the_disk_endpoints(alice, client_for):
    schema = client_for(alice).get("/api/schema/", {"format": "json"}).json()
    paths = schema["paths"]
    assert {"get", "post"} <= set(paths["/api/vms/{id}/disks/"])
    assert {"get", "patch", "delete"} <= set(paths["/api/vms/{id}/disks/{disk_id}/"])
    assert any(p["name"] == "delete_volume" for p in paths["/api/vms/{id}/disks/{disk_id}/"]["delete"]["parameters"])
    assert {"get"} <= set(paths["/api/disks/"]) and {"get", "delete"} <= set(paths["/api/disks/{id}/"])
    assert "DiskAdd" in schema["components"]["schemas"]


# --- web ----------------------------------------------------------------------------------------

def test_the_disks_panel_adds_grows_detaches_and_my_disks_deletes(alice, client, vm_of):
    vm = vm_of(alice)
    client.force_login(alice)
    page = client.get(f"/vms/{vm['id']}/").content.decode()
    assert 'id="disks"' in page and f'data-disks-panel="{vm["id"]}"' in page and 'data-disk="vda"' in page
    assert "boot disk" in page and "My disks" in page

    response = client.post(f"/vms/{vm['id']}/disks/", {"source": "new", "size_gib": "2", "label": "web-data",
                                                      "bus": "virtio"})
    assert response.status_code == 302 and response["Location"].endswith(f"/vms/{vm['id']}/#disks")
    disk = VMDisk.objects.get(vm_id=vm["id"], volume__label="web-data")
    panel = client.get(f"/vms/{vm['id']}/disks/")
    assert panel.status_code == 200 and panel["Cache-Control"] == "no-store"
    assert f'data-disk="{disk.target}"' in panel.content.decode() and "web-data" in panel.content.decode()

    response = client.post(f"/vms/{vm['id']}/disks/{disk.pk}/grow/", {"size_gib": "4"}, follow=True)
    assert "cannot grow disks" in response.content.decode()  # the test driver has no blockResize: said, not a 500
    assert Volume.objects.get(label="web-data").capacity_gib == 2

    response = client.post(f"/vms/{vm['id']}/disks/{disk.pk}/remove/")
    assert response.status_code == 302 and not VMDisk.objects.filter(pk=disk.pk).exists()
    listing = client.get("/disks/").content.decode()
    assert "web-data" in listing and "Detached" in listing

    # Attach it again from the panel (an existing data disk), then it is listed as attached.
    volume = Volume.objects.get(label="web-data")
    page = client.get(f"/vms/{vm['id']}/").content.decode()
    assert f'<option value="{volume.pk}"' in page
    client.post(f"/vms/{vm['id']}/disks/", {"source": "existing", "volume": str(volume.pk), "bus": "scsi"})
    assert VMDisk.objects.get(vm_id=vm["id"], volume=volume).bus == "scsi"
    assert "Detach it to delete it" in client.get("/disks/").content.decode()

    client.post(f"/vms/{vm['id']}/disks/{VMDisk.objects.get(volume=volume).pk}/remove/", {"delete_volume": "1"})
    assert not Volume.objects.filter(pk=volume.pk).exists()


def test_my_disks_deletes_a_detached_disk(alice, client, client_for, vm_of):
    vm = vm_of(alice)
    disk = _add(client_for(alice), vm, size_gib=1, label="old").json()["disk"]
    client_for(alice).delete(disk["url"])
    client.force_login(alice)
    volume = Volume.objects.get(label="old")
    response = client.post(f"/disks/{volume.pk}/delete/")
    assert response.status_code == 302 and response["Location"].endswith("/disks/")
    assert not Volume.objects.filter(pk=volume.pk).exists()
    assert "No data disks yet" in client.get("/disks/").content.decode()


def test_the_add_form_shows_errors_next_to_its_fields(alice, client, vm_of):
    vm = vm_of(alice)
    client.force_login(alice)
    response = client.post(f"/vms/{vm['id']}/disks/", {"source": "new", "size_gib": "lots", "bus": "virtio"})
    assert response.status_code == 400
    html = response.content.decode()
    assert 'data-field-error="size_gib"' in html and 'id="id_disk_size_gib"' in html
    assert 'value="lots"' in html
    response = client.post(f"/vms/{vm['id']}/disks/", {"source": "new", "size_gib": "1", "bus": "ide"})
    assert response.status_code == 400 and "Bus must be one of" in response.content.decode()
    response = client.post(f"/vms/{vm['id']}/disks/", {"source": "new", "size_gib": "90"})
    assert response.status_code == 400 and "quota" in response.content.decode().lower()
    assert not Volume.objects.filter(owner=alice).exists()


def test_bad_posts_never_500_and_others_vms_are_404(alice, bob, client, vm_of):
    vm = vm_of(alice)
    boot = VMDisk.objects.get(vm_id=vm["id"], target="vda")
    client.force_login(alice)
    response = client.post(f"/vms/{vm['id']}/disks/{boot.pk}/remove/", HTTP_REFERER=f"/vms/{vm['id']}/")
    assert response.status_code == 302
    assert "cannot be detached" in client.get(f"/vms/{vm['id']}/").content.decode()
    assert client.post(f"/vms/{vm['id']}/disks/{boot.pk}/grow/", {"size_gib": "x"}).status_code == 302
    assert client.post(f"/vms/{vm['id']}/disks/999999/grow/", {"size_gib": "3"}).status_code == 404
    assert client.post(f"/vms/{vm['id']}/disks/{boot.pk}/properties/", {"prop_cache": "bogus"}).status_code in (302,)
    assert client.post("/disks/999999/delete/").status_code in (302, 404)
    client.force_login(bob)
    assert client.get(f"/vms/{vm['id']}/disks/").status_code == 404
    assert client.post(f"/vms/{vm['id']}/disks/", {"size_gib": "1"}).status_code == 404
    assert client.post(f"/vms/{vm['id']}/disks/{boot.pk}/remove/").status_code == 404
    assert VMDisk.objects.filter(pk=boot.pk).exists()


@needs_properties
def test_the_properties_form_changes_only_what_was_changed(admin_user, client, vm_of):
    vm = vm_of(admin_user)
    client.force_login(admin_user)
    client.post(f"/vms/{vm['id']}/disks/", {"source": "new", "size_gib": "1", "label": "p"})
    disk = VMDisk.objects.get(vm_id=vm["id"], volume__label="p")
    assert 'name="prop_serial"' in client.get(f"/vms/{vm['id']}/disks/").content.decode()
    client.post(f"/vms/{vm['id']}/disks/{disk.pk}/properties/", {"prop_serial": "xyz"})
    disk.refresh_from_db()
    assert disk.properties.get("serial") == "xyz"


# --- CLI ----------------------------------------------------------------------------------------

def vm_cmd(*args: str) -> str:
    out = StringIO()
    call_command("vm", *args, stdout=out)
    return out.getvalue()


def test_cli_disk_verbs(alice, vm_of):
    vm_of(alice, "cli-1")
    out = vm_cmd("--user", "alice", "disk", "add", "cli-1", "--size", "2", "--label", "cli-data", "--bus", "scsi",
                 "--wait")
    assert "cli-data" in out and "job " in out and "succeeded" in out
    listed = vm_cmd("--user", "alice", "disk", "list", "cli-1")
    assert "vda" in listed and "cli-data" in listed and "scsi" in listed
    assert "already 2 GiB" in vm_cmd("--user", "alice", "disk", "grow", "cli-1", "cli-data", "2")
    vm_cmd("--user", "alice", "disk", "remove", "cli-1", "cli-data")
    assert "detached" in vm_cmd("--user", "alice", "disk", "volumes")
    vm_cmd("--user", "alice", "disk", "add", "cli-1", "--volume", "cli-data", "--readonly")
    assert VMDisk.objects.get(volume__label="cli-data").readonly
    vm_cmd("--user", "alice", "disk", "remove", "cli-1", "cli-data", "--delete")
    assert not Volume.objects.filter(label="cli-data").exists()


def test_cli_disk_refusals_exit_with_their_codes(alice, vm_of):
    from portal.exceptions import Conflict, NotFound, QuotaExceeded, ValidationFailed

    vm_of(alice, "cli-2")
    for args, code in [(("add", "cli-2", "--size", "1", "--bus", "ide"), ValidationFailed.exit_code),
                       (("add", "cli-2", "--size", "99"), QuotaExceeded.exit_code),
                       (("grow", "cli-2", "vdq", "5"), NotFound.exit_code),
                       (("remove", "cli-2", "vda"), Conflict.exit_code),
                       (("set", "cli-2", "vda", "novalue"), ValidationFailed.exit_code),
                       (("list", "nope"), NotFound.exit_code),
                       (("delete", "nothing"), NotFound.exit_code)]:
        with pytest.raises(CommandError) as exc:
            vm_cmd("--user", "alice", "disk", *args)
        assert exc.value.returncode == code, (args, str(exc.value))
    assert not Volume.objects.filter(owner=alice).exists()


# --- admin --------------------------------------------------------------------------------------

def test_admin_shows_disks_and_deletes_detached_data_disks_through_the_service(alice, admin_user, client,
                                                                                client_for, vm_of):
    vm = vm_of(alice)
    disk = _add(client_for(alice), vm, size_gib=1, label="adm", bus="scsi").json()["disk"]
    client.force_login(admin_user)
    change = client.get(f"/admin/vms/vm/{vm['id']}/change/").content.decode()
    assert "virtio-SCSI" in change or "scsi" in change
    assert "Attached" in change or "attached" in change
    volumes = client.get("/admin/storage/volume/?data_disk=yes").content.decode()
    assert "adm" in volumes and "alice" in volumes
    volume = Volume.objects.get(label="adm")

    # attached: refused up front with the reason
    refused = client.post("/admin/storage/volume/", {"action": "delete_selected", "_selected_action": [volume.pk],
                                                     "post": "yes"}, follow=True)
    assert "Detach it first" in refused.content.decode() and Volume.objects.filter(pk=volume.pk).exists()

    client_for(alice).delete(disk["url"])
    done = client.post("/admin/storage/volume/", {"action": "delete_selected", "_selected_action": [volume.pk],
                                                  "post": "yes"}, follow=True)
    assert done.status_code == 200 and not Volume.objects.filter(pk=volume.pk).exists()
    boot = VM.objects.get(pk=vm["id"]).disks.get(target="vda").volume
    assert client.get(f"/admin/storage/volume/{boot.pk}/delete/").status_code in (302, 403)
    assert Volume.objects.filter(pk=boot.pk).exists()


# --- review fixes (issue #11) -----------------------------------------------------------------------

ODD_IDS = ["²", "١", "9" * 5000, "1" + "0" * 30]  # digits to str.isdigit(), not to int(); too long for it


def test_api_odd_digit_ids_and_sizes_are_404_and_400_never_500(alice, client_for, vm_of):
    client = client_for(alice)
    vm = vm_of(alice)
    base = f"/api/vms/{vm['id']}"
    for key in ODD_IDS:
        for url in (f"{base}/disks/{key}/", f"/api/disks/{key}/", f"{base}/nics/{key}/", f"{base}/snapshots/{key}/"):
            response = client.get(url)
            assert response.status_code == 404, (url[:80], response.status_code)
        added = _add(client, vm, size_gib=key)
        assert added.status_code == 400 and "size_gib" in added.json()["errors"], added.json()
        assert len(added.json()["errors"]["size_gib"][0]) < 200
    assert VMDisk.objects.filter(vm_id=vm["id"]).count() == 1


def test_disk_lookups_of_the_services_take_odd_digits_as_labels(alice, vm_of):
    from vms import disk_doors
    from vms.validation import parse_id

    vm = VM.objects.get(pk=vm_of(alice)["id"])
    for key in ODD_IDS:
        assert parse_id(key) is None
        with pytest.raises(NotFound):
            disk_doors.vm_disk_get(vm=vm, key=key)
        with pytest.raises(NotFound):
            disk_doors.data_volume_get(actor=alice, key=key)
    assert parse_id(" 12 ") == 12 and parse_id(7) == 7 and parse_id(True) is None
