"""ISO installs and the CD-ROM drive on libvirt's test driver: create from an ISO (blank disk, CD
first), insert and eject through the services, the REST API, the web panel and `manage.py vm cdrom`,
the state rules, and an ISO that cannot be deleted while it is in a drive.

Jobs run on commit (ImmediateBackend): when a service returns, its job has run.
"""

from __future__ import annotations

import tempfile
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from portal.exceptions import Conflict, InvalidState, ValidationFailed
from portal.hypervisor import CdromSpec, get_driver
from portal.hypervisor.domain_xml import boot_order
from portal.models import AuditEvent, Job
from storage.models import Image
from storage.services import image_delete, image_register
from vms import services
from vms.choices import VMStatus
from vms.models import VM

pytestmark = pytest.mark.django_db(transaction=True)

SMALL = {"vcpus": 1, "memory_mib": 128, "disk_gib": 1}


def _register_iso(host, name: str, **fields) -> Image:
    with tempfile.NamedTemporaryFile(suffix=".iso") as fh:
        fh.write(bytes(32769) + b"CD001" + bytes(32762))  # an ISO 9660 volume descriptor's magic
        fh.flush()
        image = image_register(actor=None, host=host, name=name, title=f"Installer {name}", source_path=fh.name,
                               fmt="iso", replace=True)
    Image.objects.filter(pk=image.pk).update(kind=Image.Kind.ISO, **fields)
    image.refresh_from_db()
    return image


@pytest.fixture
def isos(test_host, bob):
    """installer: public ISO; bobs-iso: bob's private one."""
    return {
        "installer": _register_iso(test_host, "installer"),
        "bobs": _register_iso(test_host, "bobs-iso", owner=bob, visibility=Image.Visibility.PRIVATE),
    }


def create(user, name="web-1", **kw):
    return services.vm_create(actor=user, via="cli", name=name, **{**SMALL, **kw})


def xml(vm, *, inactive=True) -> str:
    return get_driver("test:///default").domain_xml(str(vm.uuid), inactive=inactive)


def cdroms(vm) -> list[CdromSpec]:
    return get_driver("test:///default").domain_cdroms(str(vm.uuid), inactive=True)


def fresh(vm) -> VM:
    return VM.objects.select_related("cdrom", "image").get(pk=vm.pk)


# --- services -------------------------------------------------------------------------------------

def test_create_from_an_iso_makes_a_blank_disk_with_the_iso_in_the_drive_and_boots_cd_first(isos, alice):
    vm = fresh(create(alice, image="installer").vm)
    assert vm.status == VMStatus.RUNNING
    assert vm.image == isos["installer"] and vm.cdrom == isos["installer"] and vm.cdrom_drive
    root = vm.disks.get(target="vda").volume
    assert root.backing_image is None and root.capacity_gib == 1  # blank: the ISO installs onto it
    assert boot_order(xml(vm)) == ["cdrom", "hd"]
    assert cdroms(vm) == [CdromSpec(target="hdc", bus="ide", path=isos["installer"].path)]
    message = AuditEvent.objects.get(action="vm.create", target_id=str(vm.pk)).message
    assert "ISO in the CD-ROM drive, blank disk" in message


def test_insert_into_a_stopped_vm_adds_the_drive_and_eject_empties_it(isos, alice):
    vm = create(alice, start=False).vm  # from the disk image: no drive, boots from disk
    assert boot_order(xml(vm)) == ["hd"] and cdroms(vm) == []

    result = services.vm_cdrom_insert(actor=alice, via="web", vm=vm, image="installer")
    assert result.message == f"Inserting installer into {vm.name}."
    assert Job.objects.get(pk=result.job.pk).status == "succeeded"
    vm = fresh(vm)
    assert vm.cdrom_drive and vm.cdrom == isos["installer"]
    assert boot_order(xml(vm)) == ["cdrom", "hd"]
    assert [c.path for c in cdroms(vm)] == [isos["installer"].path]
    again = services.vm_cdrom_insert(actor=alice, via="web", vm=vm, image=isos["installer"].pk)
    assert again.job is None and "already in the CD-ROM drive" in again.message

    ejected = services.vm_cdrom_eject(actor=alice, via="api", vm=vm)
    assert Job.objects.get(pk=ejected.job.pk).status == "succeeded"
    vm = fresh(vm)
    assert vm.cdrom_drive and vm.cdrom is None
    assert [c.path for c in cdroms(vm)] == [None]  # an empty tray: the disk boots
    assert services.vm_cdrom_eject(actor=alice, via="api", vm=vm).job is None

    actions = list(AuditEvent.objects.filter(target_id=str(vm.pk)).order_by("at", "id")
                   .values_list("action", "via", "outcome"))
    assert ("vm.cdrom.insert", "web", "requested") in actions and ("vm.cdrom.inserted", "web", "succeeded") in actions
    assert ("vm.cdrom.eject", "api", "requested") in actions and ("vm.cdrom.ejected", "api", "succeeded") in actions


def test_only_iso_images_the_actor_may_use_go_in_the_drive(isos, alice):
    vm = create(alice, start=False).vm
    with pytest.raises(ValidationFailed, match="not an ISO") as caught:
        services.vm_cdrom_insert(actor=alice, via="web", vm=vm, image="test-blank")
    assert list(caught.value.errors) == ["image"]
    with pytest.raises(ValidationFailed, match=r"Unknown ISO image 'bobs-iso' \(yours to use: installer\)"):
        services.vm_cdrom_insert(actor=alice, via="web", vm=vm, image="bobs-iso")
    with pytest.raises(ValidationFailed, match="Choose an ISO"):
        services.vm_cdrom_insert(actor=alice, via="web", vm=vm, image=" ")
    assert not fresh(vm).cdrom_drive  # nothing changed


def test_a_running_vm_without_a_drive_is_refused_clearly(isos, alice):
    vm = create(alice).vm
    with pytest.raises(InvalidState, match="cannot be added while it runs .*stop it, then insert"):
        services.vm_cdrom_insert(actor=alice, via="web", vm=vm, image="installer")
    with pytest.raises(InvalidState, match="has no CD-ROM drive"):
        services.vm_cdrom_eject(actor=alice, via="web", vm=vm)


def test_running_vm_media_change_needs_a_host_that_can_and_paused_vms_wait(isos, alice):
    vm = create(alice, image="installer").vm  # running, with the ISO in its drive
    # libvirt's test driver cannot change media live: refused before anything is recorded.
    with pytest.raises(Conflict, match="cannot change media in a running VM; stop it"):
        services.vm_cdrom_eject(actor=alice, via="web", vm=vm)
    assert fresh(vm).cdrom == isos["installer"]
    services.vm_pause(actor=alice, via="web", vm=vm)
    with pytest.raises(InvalidState, match="it is paused: resume it first"):
        services.vm_cdrom_eject(actor=alice, via="web", vm=vm)
    services.vm_force_off(actor=alice, via="web", vm=vm)
    services.vm_cdrom_eject(actor=alice, via="web", vm=vm)
    assert fresh(vm).cdrom is None


def test_an_iso_in_a_drive_cannot_be_deleted_and_says_which_vms(isos, alice, admin_user):
    iso = isos["installer"]
    vm = create(alice, image="installer", start=False).vm
    with pytest.raises(Conflict, match=r"in the CD-ROM drive of 1 VM\(s\): web-1; eject it there first"):
        image_delete(actor=admin_user, via="admin", image=iso)
    services.vm_cdrom_eject(actor=alice, via="web", vm=vm)
    image_delete(actor=admin_user, via="admin", image=iso)  # the VM installed from it does not need it
    assert fresh(vm).image is None and not Image.objects.filter(pk=iso.pk).exists()


def test_deleting_the_vm_frees_the_iso(isos, alice, admin_user):
    vm = create(alice, image="installer", start=False).vm
    services.vm_delete(actor=alice, via="web", vm=vm)
    assert fresh(vm).status == VMStatus.DELETED and fresh(vm).cdrom is None
    image_delete(actor=admin_user, via="admin", image=isos["installer"])


def test_a_failed_media_change_puts_the_previous_media_back(isos, alice):
    vm = create(alice, start=False).vm
    get_driver("test:///default").undefine(str(vm.uuid))  # the job finds no domain: fine, defined at start
    services.vm_cdrom_insert(actor=alice, via="web", vm=vm, image="installer")
    assert fresh(vm).cdrom == isos["installer"]
    # A job whose ISO vanished fails, and the row goes back to what it had.
    from vms.jobs import _media_failed

    job = Job.objects.filter(kind="vm.cdrom.insert").get()
    job.params = {**job.params, "previous_cdrom_id": None, "previous_drive": False}
    _media_failed(job, "boom")
    vm = fresh(vm)
    assert vm.cdrom is None and not vm.cdrom_drive
    assert AuditEvent.objects.filter(action="vm.cdrom.insert", outcome="failed", message__contains="boom").exists()


# --- REST API -------------------------------------------------------------------------------------

def test_api_creates_from_an_iso_inserts_and_ejects(isos, alice, client_for):
    client = client_for(alice)
    created = client.post("/api/vms/", {"name": "inst-1", "image": "installer", **SMALL, "start": False},
                          format="json")
    assert created.status_code == 202, created.content
    body = created.json()["vm"]
    assert (body["image"], body["cdrom"], body["cdrom_drive"]) == ("installer", "installer", True)
    url = body["cdrom_url"]
    assert url.endswith(f"/api/vms/{body['id']}/cdrom/")

    ejected = client.delete(url)
    assert ejected.status_code == 202, ejected.content
    assert ejected.json()["vm"]["cdrom"] is None and ejected.json()["job"]["kind"] == "vm.cdrom.eject"
    assert client.delete(url).status_code == 200  # already empty: a no-op

    inserted = client.post(url, {"image": isos["installer"].pk}, format="json")
    assert inserted.status_code == 202 and inserted.json()["vm"]["cdrom"] == "installer"
    wrong = client.post(url, {"image": "test-blank"}, format="json")
    assert wrong.status_code == 400 and "not an ISO" in wrong.json()["detail"]
    assert client.post(url, {"image": "bobs-iso"}, format="json").status_code == 400


def test_api_refuses_a_drive_for_a_running_vm_with_409(isos, alice, client_for):
    vm = create(alice).vm
    response = client_for(alice).post(f"/api/vms/{vm.pk}/cdrom/", {"image": "installer"}, format="json")
    assert response.status_code == 409
    assert "stop it, then insert the ISO" in response.json()["detail"]


def test_api_other_users_vms_are_404(isos, alice, bob, client_for):
    vm = create(alice, start=False).vm
    assert client_for(bob).post(f"/api/vms/{vm.pk}/cdrom/", {"image": "bobs-iso"}, format="json").status_code == 404


# --- web ------------------------------------------------------------------------------------------

def test_web_panel_shows_the_media_and_inserts_and_ejects(isos, alice, client):
    client.force_login(alice)
    vm = create(alice, start=False).vm
    page = client.get(f"/vms/{vm.pk}/").content.decode()
    assert 'id="cdrom"' in page and "No CD-ROM drive." in page and "Inserting an ISO adds one" in page
    assert '<option value="installer"' in page and "bobs-iso" not in page

    response = client.post(f"/vms/{vm.pk}/cdrom/", {"image": "installer"}, follow=True)
    assert f"Inserting installer into {vm.name}." in response.content.decode()
    panel = client.get(f"/vms/{vm.pk}/cdrom/").content.decode()
    assert "Installer installer" in panel and "CD first, then disk" in panel and 'data-cdrom-action="eject"' in panel

    response = client.post(f"/vms/{vm.pk}/cdrom/eject/", follow=True)
    assert f"Ejecting installer from {vm.name}." in response.content.decode()
    panel = client.get(f"/vms/{vm.pk}/cdrom/").content.decode()
    assert "Empty" in panel and 'data-cdrom-action="eject"' not in panel

    bad = client.post(f"/vms/{vm.pk}/cdrom/", {"image": "test-blank"}, follow=True)
    assert "not an ISO" in bad.content.decode()


def test_web_running_vm_without_a_drive_says_to_stop_it(isos, alice, client):
    client.force_login(alice)
    vm = create(alice).vm
    panel = client.get(f"/vms/{vm.pk}/cdrom/").content.decode()
    assert "Stop the VM to add one" in panel
    assert 'data-cdrom-action="insert" disabled' in panel


def test_create_form_offers_isos(isos, alice, client):
    client.force_login(alice)
    page = client.get("/vms/new/").content.decode()
    assert "Installer installer" in page and "installs onto a blank disk" in page


# --- CLI and admin --------------------------------------------------------------------------------

def vm_cmd(*args: str) -> str:
    out = StringIO()
    call_command("vm", *args, stdout=out)
    return out.getvalue()


def test_cli_inserts_shows_and_ejects(isos, alice):
    vm = create(alice, start=False).vm
    out = vm_cmd("--user", "alice", "cdrom", vm.name, "--insert", "installer")
    assert f"Inserting installer into {vm.name}." in out and "job " in out
    assert "cdrom        installer" in vm_cmd("--user", "alice", "show", vm.name)
    assert "Ejecting installer" in vm_cmd("--user", "alice", "cdrom", vm.name, "--eject", "--wait")
    assert "cdrom        (empty)" in vm_cmd("--user", "alice", "show", vm.name)
    with pytest.raises(CommandError, match="not an ISO") as caught:
        vm_cmd("--user", "alice", "cdrom", vm.name, "--insert", "test-blank")
    assert caught.value.returncode == ValidationFailed.exit_code
    with pytest.raises(CommandError):  # one of --insert / --eject is required
        vm_cmd("--user", "alice", "cdrom", vm.name)


def test_admin_change_page_shows_the_drive_and_media(isos, alice, admin_user, client):
    vm = create(alice, image="installer", start=False).vm
    client.force_login(admin_user)
    page = client.get(f"/admin/vms/vm/{vm.pk}/change/").content.decode()
    assert "CD-ROM" in page and "boots from CD first" in page and "Installer installer" in page


def test_cli_wait_runs_the_job_itself_when_no_worker_takes_it(isos, alice, settings, monkeypatch):
    """The demo on the test driver has no separate worker: `vm … --wait` then runs the job here instead of
    waiting forever (and leaving the job pending, which would block the VM's next action)."""
    vm = create(alice, start=False).vm
    settings.TASKS = {"default": {"BACKEND": "django.tasks.backends.dummy.DummyBackend"}}  # stores, never runs
    monkeypatch.setattr("vms.management.commands.vm.WORKER_GRACE_SECONDS", 0.0)
    out = vm_cmd("--user", "alice", "--wait", "cdrom", vm.name, "--insert", "installer")
    assert "No job worker took the job; running it here." in out and "succeeded 100%" in out
    assert fresh(vm).cdrom == isos["installer"]
    assert [c.path for c in cdroms(vm)] == [isos["installer"].path]
