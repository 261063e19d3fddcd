"""Adopting foreign domains and releasing VMs, on libvirt's test driver: the rules and every door.

The "foreign" domains are defined through the gateway with no portal metadata, as any libvirt tool
would leave them; the real proof (same QEMU process, then managed like any VM) is in
test_adoption_qemu.py.
"""

from __future__ import annotations

import uuid as uuidlib

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from cluster.models import ForeignDomain
from cluster.services import host_sync
from portal.exceptions import Conflict, PermissionDenied, QuotaExceeded
from portal.hypervisor import DiskSpec, DomainSpec, NicSpec, PowerState, get_driver
from portal.models import AuditEvent, Job
from quotas.selectors import quota_usage
from storage.models import StoragePool, Volume
from vms import services
from vms.adoption import adoption_plan, vm_adopt, vm_release
from vms.choices import VMStatus
from vms.models import VM, VMNic

pytestmark = pytest.mark.django_db(transaction=True)
URI = "test:///default"
GIB = 1024**3


def define_foreign(name="legacy-web", *, disks=None, nics=(), vcpus=2, memory_mib=512, metadata=None,
                   start=True, disk_gib=2):
    """A domain made outside the portal: its disk a volume of the portal's pool, no portal metadata."""
    driver = get_driver(URI)
    if disks is None:
        vol = driver.create_volume(pool=settings.STORAGE_POOL, name=f"{settings.DOMAIN_PREFIX}-{name}.qcow2",
                                   capacity_bytes=disk_gib * GIB)
        disks = (DiskSpec(path=vol.path, target="sda", bus="scsi"),)
    spec = DomainSpec(name=f"{settings.DOMAIN_PREFIX}-{name}", uuid=str(uuidlib.uuid4()), vcpus=vcpus,
                      memory_mib=memory_mib, domain_type="test", title=name, disks=tuple(disks), nics=tuple(nics),
                      graphics=False, metadata=metadata or {})
    driver.define(spec)
    if start:
        driver.start(spec.uuid)
    return spec


def adopt(actor, spec, host, owner, **kw):
    return vm_adopt(actor=actor, via="cli", host=host, uuid=spec.uuid, owner=owner, **kw)


def test_reconcile_lists_it_and_adoption_makes_it_a_running_vm_of_the_owner(test_host, admin_user, alice):
    spec = define_foreign()
    host_sync(host=test_host)
    assert ForeignDomain.objects.filter(host=test_host, uuid=spec.uuid).exists()

    vm = adopt(admin_user, spec, test_host, alice)

    assert (vm.name, vm.owner, vm.status, vm.domain_name) == ("legacy-web", alice, VMStatus.RUNNING, spec.name)
    assert (str(vm.uuid), vm.vcpus, vm.memory_mib, vm.disk_gib) == (spec.uuid, 2, 512, 2)
    assert vm.adopted_at is not None and vm.image is None
    disk = vm.disks.select_related("volume").get()
    assert (disk.target, disk.bus, disk.volume.backing_image, disk.volume.capacity_gib) == ("sda", "scsi", None, 2)
    assert disk.volume.path == spec.disks[0].path
    info = get_driver(URI).domain_info(spec.uuid)
    assert info.state == PowerState.RUNNING
    assert info.metadata == {"instance": settings.INSTANCE_ID, "vm-id": str(vm.pk), "owner": "alice",
                             "created-via": "cli"}
    assert not ForeignDomain.objects.filter(uuid=spec.uuid).exists()
    host_sync(host=test_host)  # the next reconcile claims it as the portal's
    assert not ForeignDomain.objects.filter(uuid=spec.uuid).exists()
    assert {u.resource: u.used for u in quota_usage(user=alice)} == {"vms": 1, "vcpus": 2, "memory_mib": 512,
                                                                      "disk_gib": 2, "backup_gib": 0}
    event = AuditEvent.objects.get(action="vm.adopt", target_id=str(vm.pk))
    assert event.actor == admin_user and "Adopted domain" in event.message and event.data["owner"] == "alice"

    # managed like any portal VM: power, then delete removes the domain and its volume
    assert Job.objects.get(pk=services.vm_force_off(actor=alice, via="cli", vm=vm).job.pk).status == "succeeded"
    assert get_driver(URI).domain_info(spec.uuid).state == PowerState.SHUTOFF
    assert Job.objects.get(pk=services.vm_start(actor=alice, via="cli", vm=vm).job.pk).status == "succeeded"
    assert Job.objects.get(pk=services.vm_delete(actor=alice, via="cli", vm=vm).job.pk).status == "succeeded"
    assert not get_driver(URI).domain_exists(spec.uuid)
    names = {v.name for v in get_driver(URI).list_volumes(pool=settings.STORAGE_POOL)}
    assert f"{settings.DOMAIN_PREFIX}-legacy-web.qcow2" not in names


def test_only_administrators_adopt(test_host, alice):
    spec = define_foreign()
    with pytest.raises(PermissionDenied, match="Only administrators adopt"):
        adopt(alice, spec, test_host, alice)
    assert not VM.objects.exists()
    assert get_driver(URI).domain_info(spec.uuid).metadata is None


def test_quota_is_checked_unless_an_override_reason_is_given_and_audited(test_host, admin_user, alice):
    spec = define_foreign(vcpus=8)  # alice may have 4 vCPUs
    with pytest.raises(QuotaExceeded):
        adopt(admin_user, spec, test_host, alice)
    assert not VM.objects.exists() and not Volume.objects.filter(name__contains="legacy-web").exists()
    denied = AuditEvent.objects.get(action="vm.adopt", outcome="denied")
    assert "override reason adopts it anyway" in denied.message

    vm = adopt(admin_user, spec, test_host, alice, override_reason="Legacy build server, approved by ops (T-42)")
    assert vm.vcpus == 8
    event = AuditEvent.objects.get(action="vm.adopt", outcome="succeeded")
    assert "Quota overridden" in event.message and "T-42" in event.message
    assert event.data["override_reason"] == "Legacy build server, approved by ops (T-42)"
    assert "vCPUs" in event.data["quota_exceeded"]


def test_a_disk_outside_every_pool_is_refused_naming_it(test_host, admin_user, alice):
    spec = define_foreign(disks=[DiskSpec(path="/srv/elsewhere/legacy.qcow2", target="vda")])
    with pytest.raises(Conflict) as exc:
        adopt(admin_user, spec, test_host, alice)
    assert "/srv/elsewhere/legacy.qcow2" in exc.value.message and "outside every storage pool" in exc.value.message
    assert not VM.objects.exists()


def test_another_portal_instances_domain_is_refused(test_host, admin_user, alice):
    spec = define_foreign(metadata={"instance": "portal-b", "vm-id": "7", "owner": "eve", "created-via": "web"})
    host_sync(host=test_host)
    assert ForeignDomain.objects.get(uuid=spec.uuid).owner_hint == "portal instance portal-b"
    with pytest.raises(Conflict, match="another portal instance"):
        adopt(admin_user, spec, test_host, alice)
    assert get_driver(URI).domain_info(spec.uuid).metadata["instance"] == "portal-b"


def test_a_portal_vm_cannot_be_adopted_again(test_host, admin_user, alice, bob):
    spec = define_foreign()
    adopt(admin_user, spec, test_host, alice)
    with pytest.raises(Conflict, match="already the portal VM legacy-web"):
        adopt(admin_user, spec, test_host, bob)


def test_nics_on_portal_networks_are_kept_and_others_refused(test_host, admin_user, alice, make_network):
    lab = make_network("lab")
    good = define_foreign("on-lab", nics=[NicSpec(network=lab.libvirt_name, mac="52:54:00:aa:bb:01", model="e1000")])
    vm = adopt(admin_user, good, test_host, alice)
    nic = VMNic.objects.get(vm=vm)
    assert (nic.mac, nic.network, nic.model, nic.status) == ("52:54:00:aa:bb:01", lab, "e1000", "attached")

    other = define_foreign("on-default", nics=[NicSpec(network="default", mac="52:54:00:aa:bb:02")])
    with pytest.raises(Conflict, match="NIC 52:54:00:aa:bb:02 .libvirt network default. is not on a portal network"):
        adopt(admin_user, other, test_host, alice)


def test_unknown_pools_are_registered_and_names_taken_are_refused(test_host, admin_user, alice):
    driver = get_driver(URI)
    vol = driver.volume_info(pool="default-pool", name="default-vol") if any(
        v.name == "default-vol" for v in driver.list_volumes(pool="default-pool")) else driver.create_volume(
        pool="default-pool", name="default-vol", capacity_bytes=GIB)
    spec = define_foreign("in-other-pool", disks=[DiskSpec(path=vol.path, target="vda")])
    services.vm_create(actor=alice, via="cli", name="in-other-pool", vcpus=1, memory_mib=64, disk_gib=1)
    with pytest.raises(Exception, match="already has a VM named 'in-other-pool'"):
        adopt(admin_user, spec, test_host, alice)
    vm = adopt(admin_user, spec, test_host, alice, name="old-box")
    assert vm.name == "old-box"
    pool = StoragePool.objects.get(host=test_host, name="default-pool")
    assert pool.path == "/default-pool"
    assert vm.disks.get().volume.pool == pool
    assert AuditEvent.objects.filter(action="pool.register").exists()


def test_plan_lists_every_problem_at_once(test_host, admin_user):
    spec = define_foreign("messy", disks=[DiskSpec(path="/nowhere/a.qcow2", target="vda"),
                                          DiskSpec(path="/nowhere/b.raw", target="vdb", format="raw")],
                          nics=[NicSpec(network="default", mac="52:54:00:aa:bb:03")])
    plan = adoption_plan(actor=admin_user, host=test_host, uuid=spec.uuid)
    assert not plan.ok and len(plan.problems) == 3
    assert "/nowhere/a.qcow2" in plan.problems[0] and "/nowhere/b.raw" in plan.problems[1]


def test_release_leaves_the_domain_running_and_it_is_foreign_again(test_host, admin_user, alice):
    spec = define_foreign()
    vm = adopt(admin_user, spec, test_host, alice)
    pk = vm.pk

    vm_release(actor=admin_user, via="cli", vm=vm, reason="handed back to the lab team")

    info = get_driver(URI).domain_info(spec.uuid)
    assert info.state == PowerState.RUNNING and info.metadata is None
    assert not VM.objects.filter(pk=pk).exists() and not Volume.objects.filter(path=spec.disks[0].path).exists()
    assert any(v.path == spec.disks[0].path for v in get_driver(URI).list_volumes(pool=settings.STORAGE_POOL))
    assert ForeignDomain.objects.filter(uuid=spec.uuid, state="running").exists()
    host_sync(host=test_host)
    assert ForeignDomain.objects.get(uuid=spec.uuid).owner_hint == ""
    assert {u.resource: u.used for u in quota_usage(user=alice)}["vms"] == 0
    event = AuditEvent.objects.get(action="vm.release", target_id=str(pk))
    assert "handed back to the lab team" in event.message and event.data["owner"] == "alice"
    # and it can be adopted again
    assert adopt(admin_user, spec, test_host, alice).status == VMStatus.RUNNING


def test_release_is_refused_while_a_job_runs_and_for_non_admins(test_host, admin_user, alice):
    spec = define_foreign()
    vm = adopt(admin_user, spec, test_host, alice)
    with pytest.raises(PermissionDenied):
        vm_release(actor=alice, via="cli", vm=vm)
    Job.objects.create(kind="vm.snapshot.create", target_type="vm", target_id=str(vm.pk), status="running")
    with pytest.raises(Conflict, match="job is running"):
        vm_release(actor=admin_user, via="cli", vm=vm)
    assert VM.objects.filter(pk=vm.pk).exists()
    assert get_driver(URI).domain_info(spec.uuid).metadata["vm-id"] == str(vm.pk)


def test_portal_made_vms_on_images_are_not_released(test_host, admin_user, alice):
    vm = services.vm_create(actor=alice, via="cli", name="made-here", vcpus=1, memory_mib=64, disk_gib=1).vm
    with pytest.raises(Conflict, match="thin overlay on the portal's image test-blank"):
        vm_release(actor=admin_user, via="cli", vm=vm)


# --- doors ----------------------------------------------------------------------------------------

def test_api_lists_adopts_and_releases_for_admins_only(test_host, admin_user, alice, client_for):
    spec = define_foreign()
    host_sync(host=test_host)
    fd = ForeignDomain.objects.get(uuid=spec.uuid)
    assert client_for(alice).get("/api/foreign-domains/").status_code == 403
    listed = client_for(admin_user).get("/api/foreign-domains/").json()["results"]
    assert spec.uuid in [d["uuid"] for d in listed]  # (with the test driver's own "test" domain)
    refused = client_for(alice).post(f"/api/foreign-domains/{fd.pk}/adopt/", {"owner": "alice"}, format="json")
    assert refused.status_code == 403

    r = client_for(admin_user).post(f"/api/foreign-domains/{spec.uuid}/adopt/", {"owner": "alice", "name": "web-old"},
                                    format="json")
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["vm"]["name"] == "web-old" and body["vm"]["status"] == "running"
    assert "deletes its volumes" in body["delete_note"]

    vm_id = body["vm"]["id"]
    assert client_for(alice).post(f"/api/vms/{vm_id}/release/").status_code == 403
    r = client_for(admin_user).post(f"/api/vms/{vm_id}/release/", {"reason": "test"}, format="json")
    assert r.status_code == 200 and "Released web-old" in r.json()["message"]
    assert ForeignDomain.objects.filter(uuid=spec.uuid).exists()


def test_api_explains_why_a_domain_cannot_be_adopted(test_host, admin_user, client_for):
    spec = define_foreign(disks=[DiskSpec(path="/srv/elsewhere/x.qcow2", target="vda")])
    host_sync(host=test_host)
    r = client_for(admin_user).post(f"/api/foreign-domains/{spec.uuid}/adopt/", {"owner": "root-admin"},
                                    format="json")
    assert r.status_code == 409
    assert "/srv/elsewhere/x.qcow2" in r.json()["detail"] and len(r.json()["problems"]) == 1


def test_cli_adopts_by_name_and_releases(test_host, admin_user, alice, capsys):
    spec = define_foreign()
    host_sync(host=test_host)
    call_command("vm", "--user", admin_user.username, "adopt", test_host.name, spec.name, "--owner", "alice")
    out = capsys.readouterr().out
    assert "Adopted vmptest-legacy-web as legacy-web for alice" in out and "Delete powers it off" in out
    with pytest.raises(CommandError, match="Only administrators release"):
        call_command("vm", "--user", "alice", "release", "legacy-web")
    call_command("vm", "--user", admin_user.username, "release", "legacy-web", "--reason", "done")
    assert "Released legacy-web" in capsys.readouterr().out
    assert get_driver(URI).domain_info(spec.uuid).state == PowerState.RUNNING


def test_admin_adopt_page_and_release_action(test_host, admin_user, alice, client):
    spec = define_foreign()
    host_sync(host=test_host)
    fd = ForeignDomain.objects.get(uuid=spec.uuid)
    client.force_login(admin_user)
    listing = client.get(reverse("admin:cluster_foreigndomain_changelist"))
    assert listing.status_code == 200 and b"Adopt the selected domain" in listing.content
    assert b"Adopt" in client.get(reverse("admin:cluster_foreigndomain_change", args=[fd.pk])).content
    url = reverse("admin:cluster_foreigndomain_adopt", args=[fd.pk])
    page = client.get(url)
    assert page.status_code == 200
    assert b"deletes its volumes" in page.content and b"sda (scsi)" in page.content

    r = client.post(url, {"owner": alice.pk, "name": "", "override_reason": ""})
    vm = VM.objects.get(uuid=spec.uuid)
    assert r.status_code == 302 and r["Location"] == reverse("admin:vms_vm_change", args=[vm.pk])

    r = client.post(reverse("admin:vms_vm_changelist"), {"action": "release", "_selected_action": [vm.pk]})
    assert r.status_code == 302
    assert not VM.objects.filter(pk=vm.pk).exists()
    assert ForeignDomain.objects.filter(uuid=spec.uuid).exists()


def test_admin_adopt_page_shows_problems_without_a_form(test_host, admin_user, client):
    spec = define_foreign(disks=[DiskSpec(path="/srv/elsewhere/y.qcow2", target="vda")])
    host_sync(host=test_host)
    fd = ForeignDomain.objects.get(uuid=spec.uuid)
    client.force_login(admin_user)
    page = client.get(reverse("admin:cluster_foreigndomain_adopt", args=[fd.pk]))
    assert b"cannot be adopted" in page.content and b"/srv/elsewhere/y.qcow2" in page.content
    assert b'value="Adopt' not in page.content
