"""Data disks on libvirt's test driver: add (new or existing), remove, grow, delete; targets, quota, the
sharing rules, the boot disk, and nothing left behind when a job fails (vms.disks, vms.jobs). The guest's
view (hot-plug, read-only, unplug, live grow) is proven on qemu:///system in test_disks_qemu.py.

Jobs run on commit (ImmediateBackend): a returned job has already run when the test looks.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from portal.exceptions import Conflict, InvalidState, NotFound, QuotaExceeded, ValidationFailed
from portal.models import AuditEvent, Job
from quotas.usage import usage_in
from storage.models import StoragePool, Volume
from vms import services
from vms.disks import (
    data_volume_delete,
    data_volumes_visible,
    vm_disk_add,
    vm_disk_grow,
    vm_disk_remove,
)
from vms.models import VM, VMDisk
from vms.specs import build_spec

pytestmark = pytest.mark.django_db(transaction=True)


def make_vm(user, name="web-1", start=False, **kw):
    return services.vm_create(actor=user, via="cli", name=name, vcpus=1, memory_mib=128, disk_gib=1, start=start,
                              **kw).vm


def job_ok(job):
    job = Job.objects.get(pk=job.pk)
    assert job.status == "succeeded", f"{job.kind}: {job.status} {job.error}"
    return job


def disks_in(driver, vm, *, inactive=True) -> dict[str, dict]:
    root = ET.fromstring(driver.domain_xml(str(vm.uuid), inactive=inactive))
    out = {}
    for d in root.findall("devices/disk[@device='disk']"):
        t = d.find("target")
        out[t.get("dev")] = {"bus": t.get("bus"), "file": d.find("source").get("file"),
                             "readonly": d.find("readonly") is not None, "shareable": d.find("shareable") is not None}
    return out


def test_a_new_disk_is_made_attached_and_charged_to_the_owners_quota(test_host, alice, driver):
    vm = make_vm(alice)
    before = usage_in(user=alice)["disk_gib"]
    disk, job, message = vm_disk_add(actor=alice, via="api", vm=vm, size_gib=3, label="data")
    job_ok(job)
    disk.refresh_from_db()
    assert (disk.target, disk.bus, disk.status, disk.readonly) == ("vdb", "virtio", "attached", False)
    vol = disk.volume
    assert (vol.owner, vol.group, vol.label, vol.capacity_gib, vol.format) == (alice, None, "data", 3, "qcow2")
    assert vol.path and "Adding disk data" in message
    assert usage_in(user=alice)["disk_gib"] == before + 3  # the VM's boot disk still counted once
    assert disks_in(driver, vm)["vdb"] == {"bus": "virtio", "file": vol.path, "readonly": False, "shareable": False}
    # A SCSI disk: sdX on the VM's virtio-SCSI controller (always in the domain).
    scsi, job, _ = vm_disk_add(actor=alice, via="api", vm=vm, size_gib=1, bus="scsi")
    job_ok(job)
    assert scsi.target == "sda" and scsi.volume.label == "web-1-data1"
    xml = ET.fromstring(driver.domain_xml(str(vm.uuid), inactive=True))
    assert xml.find("devices/controller[@type='scsi']").get("model") == "virtio-scsi"
    assert disks_in(driver, vm)["sda"]["bus"] == "scsi"
    # A second SCSI disk shares that controller: one virtio-SCSI controller per VM.
    scsi2, job, _ = vm_disk_add(actor=alice, via="api", vm=vm, size_gib=1, bus="scsi")
    job_ok(job)
    xml = ET.fromstring(driver.domain_xml(str(vm.uuid), inactive=True))
    assert scsi2.target == "sdb" and len(xml.findall("devices/controller[@type='scsi']")) == 1
    assert AuditEvent.objects.filter(action="vm.disk.add", outcome="requested").count() == 3
    assert AuditEvent.objects.filter(action="vm.disk.added").count() == 3


def test_bad_input_is_refused_and_nothing_is_made(test_host, alice, bob, settings):
    vm = make_vm(alice)
    cases = [
        (dict(size_gib=1, bus="ide"), ValidationFailed, "Bus must be one of"),
        (dict(size_gib=1, label="no spaces"), ValidationFailed, "label is 1 to 63"),
        (dict(), ValidationFailed, "Give the new disk's size"),
        (dict(size_gib="lots"), ValidationFailed, "whole number"),
        (dict(size_gib=1, volume="x"), ValidationFailed, "not both"),
        (dict(size_gib=1, readonly=True), ValidationFailed, "read-only blank disk"),
        (dict(size_gib=1, pool="nowhere"), ValidationFailed, "no storage domain 'nowhere'"),
        (dict(size_gib=20), QuotaExceeded, "Quota exceeded for Disk"),  # alice: 20 GiB, the VM has 1
        (dict(volume="missing"), NotFound, "No data disk"),
    ]
    for kwargs, error, text in cases:
        with pytest.raises(error, match=text):
            vm_disk_add(actor=alice, via="api", vm=vm, **kwargs)
    with pytest.raises(NotFound):
        vm_disk_add(actor=bob, via="api", vm=vm, size_gib=1)
    assert not Volume.objects.filter(owner__isnull=False).exists() and vm.disks.count() == 1
    job_ok(vm_disk_add(actor=alice, via="api", vm=vm, size_gib=1, label="one")[1])
    with pytest.raises(ValidationFailed, match="already has a disk labelled 'one'"):
        vm_disk_add(actor=alice, via="api", vm=vm, size_gib=1, label="one")
    settings.DISKS_PER_VM = 2
    with pytest.raises(InvalidState, match="already has 2 disks"):
        vm_disk_add(actor=alice, via="api", vm=vm, size_gib=1)


def test_a_running_vm_on_a_host_without_hot_plug_is_refused(test_host, alice):
    vm = make_vm(alice, start=True)
    assert VM.objects.get(pk=vm.pk).status == "running"
    with pytest.raises(Conflict, match="cannot add disks to a running VM"):
        vm_disk_add(actor=alice, via="api", vm=vm, size_gib=1)


def test_the_boot_disk_cannot_be_removed_and_a_data_disk_detaches_then_is_deleted(test_host, alice, bob, driver):
    vm = make_vm(alice)
    with pytest.raises(Conflict, match="is its boot disk"):
        vm_disk_remove(actor=alice, via="api", vm=vm, disk="vda")
    disk, job, _ = vm_disk_add(actor=alice, via="api", vm=vm, size_gib=2, label="keep")
    job_ok(job)
    used = usage_in(user=alice)["disk_gib"]
    _, job, _ = vm_disk_remove(actor=alice, via="api", vm=vm, disk="keep")  # by label
    job_ok(job)
    assert "vdb" not in disks_in(driver, vm) and not vm.disks.filter(target="vdb").exists()
    vol = Volume.objects.get(label="keep")  # detached, kept, still charged
    assert usage_in(user=alice)["disk_gib"] == used
    assert list(data_volumes_visible(alice)) == [vol] and not data_volumes_visible(bob).exists()
    # Attached again (its old target is free once it is gone), then removed and deleted.
    again, job, _ = vm_disk_add(actor=alice, via="api", vm=vm, volume="keep", bus="scsi")
    job_ok(job)
    assert again.target == "sda" and again.volume == vol
    with pytest.raises(NotFound):
        data_volume_delete(actor=bob, via="api", volume=vol.pk)
    with pytest.raises(Conflict, match="attached to web-1: detach it first"):
        data_volume_delete(actor=alice, via="api", volume="keep")
    job_ok(vm_disk_remove(actor=alice, via="api", vm=vm, disk=again.pk, delete_volume=True)[1])
    assert not Volume.objects.filter(pk=vol.pk).exists()
    assert usage_in(user=alice)["disk_gib"] == used - 2


def test_a_detached_disk_is_deleted_on_its_own(test_host, alice, driver):
    vm = make_vm(alice)
    disk, job, _ = vm_disk_add(actor=alice, via="api", vm=vm, size_gib=1, label="spare")
    job_ok(job)
    name = disk.volume.name
    job_ok(vm_disk_remove(actor=alice, via="api", vm=vm, disk="vdb")[1])
    vol, job, message = data_volume_delete(actor=alice, via="web", volume="spare")
    job_ok(job)
    assert not Volume.objects.filter(label="spare").exists()
    assert name not in {v.name for v in driver.list_volumes(pool=vol.pool.name)}
    assert AuditEvent.objects.filter(action="volume.deleted", target_name="spare").exists()


def test_targets_are_never_reused_while_a_guest_may_hold_them(test_host, alice):
    vm = make_vm(alice)
    first, job, _ = vm_disk_add(actor=alice, via="api", vm=vm, size_gib=1)
    job_ok(job)
    VMDisk.objects.filter(pk=first.pk).update(status=VMDisk.Status.DETACHING)
    with pytest.raises(InvalidState, match="disk vdb is still detaching"):  # one change at a time
        vm_disk_add(actor=alice, via="api", vm=vm, size_gib=1)
    assert [d.target for d in build_spec(vm, domain_type="test").disks] == ["vda"]  # not in the spec any more
    with pytest.raises(InvalidState, match="disk vdb is still detaching"):
        services.vm_start(actor=alice, via="api", vm=vm)
    VMDisk.objects.filter(pk=first.pk).update(status=VMDisk.Status.ATTACHED)
    second, job, _ = vm_disk_add(actor=alice, via="api", vm=vm, size_gib=1)
    job_ok(job)
    assert second.target == "vdc"


def test_sharing_rules(test_host, alice, driver):
    one, two, three = make_vm(alice, "one"), make_vm(alice, "two"), make_vm(alice, "three")
    plain, job, _ = vm_disk_add(actor=alice, via="api", vm=one, size_gib=1, label="plain")
    job_ok(job)
    with pytest.raises(Conflict, match="not shareable"):
        vm_disk_add(actor=alice, via="api", vm=two, volume="plain", readonly=True)
    with pytest.raises(ValidationFailed, match="not shareable"):
        vm_disk_add(actor=alice, via="api", vm=two, volume="plain", shareable=True)
    shared, job, _ = vm_disk_add(actor=alice, via="api", vm=one, size_gib=1, label="shared", shareable=True)
    job_ok(job)
    with pytest.raises(Conflict, match="attached read-write to one"):  # someone writes to it
        vm_disk_add(actor=alice, via="api", vm=two, volume="shared", readonly=True)
    job_ok(vm_disk_remove(actor=alice, via="api", vm=one, disk="shared")[1])
    shared.volume.refresh_from_db()
    for vm in (one, two):
        job_ok(vm_disk_add(actor=alice, via="api", vm=vm, volume="shared", readonly=True, bus="scsi")[1])
        assert disks_in(driver, vm)["sda"] == {"bus": "scsi", "file": shared.volume.path, "readonly": True,
                                               "shareable": True}
    with pytest.raises(Conflict, match="attached read-only only"):
        vm_disk_add(actor=alice, via="api", vm=three, volume="shared")
    with pytest.raises(Conflict, match="attached to two too"):
        vm_disk_remove(actor=alice, via="api", vm=one, disk="shared", delete_volume=True)
    with pytest.raises(Conflict, match="already"):
        vm_disk_add(actor=alice, via="api", vm=one, volume="shared", readonly=True)
    # Deleting a VM: its own non-shared data disk goes; the shared one stays attached to the other VM.
    plain_name = plain.volume.name
    job_ok(services.vm_delete(actor=alice, via="api", vm=one).job)
    assert not Volume.objects.filter(label="plain").exists()
    assert plain_name not in {v.name for v in driver.list_volumes(pool=plain.volume.pool.name)}
    kept = Volume.objects.get(label="shared")
    assert list(kept.attachments.values_list("vm__name", flat=True)) == ["two"]
    # The last VM using a shareable disk goes: the disk stays, the owner's, detached.
    job_ok(services.vm_delete(actor=alice, via="api", vm=two).job)
    assert Volume.objects.filter(label="shared").exists() and not VMDisk.objects.filter(volume=kept).exists()


def test_a_failed_add_leaves_no_volume_no_attachment_and_no_charge(test_host, alice):
    vm = make_vm(alice)
    ghost = StoragePool.objects.create(host=test_host, name="ghost", path="/nonexistent/ghost")  # not in libvirt
    used = usage_in(user=alice)["disk_gib"]
    disk, job, _ = vm_disk_add(actor=alice, via="api", vm=vm, size_gib=2, label="doomed", pool=ghost.name)
    job = Job.objects.get(pk=job.pk)
    assert job.status == "failed"
    assert not VMDisk.objects.filter(pk=disk.pk).exists() and not Volume.objects.filter(label="doomed").exists()
    assert usage_in(user=alice)["disk_gib"] == used
    assert AuditEvent.objects.filter(action="vm.disk.add", outcome="failed").exists()
    assert vm.disks.count() == 1


def test_grow_rules_for_data_disks(test_host, alice):
    vm = make_vm(alice)
    disk, job, _ = vm_disk_add(actor=alice, via="api", vm=vm, size_gib=2, label="grow")
    job_ok(job)
    assert vm_disk_grow(actor=alice, via="api", vm=vm, disk="grow", size_gib=2)[1] is None  # a no-op
    with pytest.raises(ValidationFailed, match="can only grow"):
        vm_disk_grow(actor=alice, via="api", vm=vm, disk="vdb", size_gib=1)
    with pytest.raises(Conflict, match="cannot grow disks"):  # the test driver has no resize
        vm_disk_grow(actor=alice, via="api", vm=vm, disk="vdb", size_gib=3)
    with pytest.raises(Conflict, match="cannot grow disks"):  # the boot disk: vms.services.vm_grow_disk
        vm_disk_grow(actor=alice, via="api", vm=vm, disk="vda", size_gib=3)
    job_ok(vm_disk_remove(actor=alice, via="api", vm=vm, disk="vdb")[1])
    two = make_vm(alice, "two")
    Volume.objects.filter(label="grow").update(shareable=True)
    job_ok(vm_disk_add(actor=alice, via="api", vm=two, volume="grow", readonly=True)[1])
    with pytest.raises(ValidationFailed, match="read-only"):
        vm_disk_grow(actor=alice, via="api", vm=two, disk="grow", size_gib=3)
    assert Volume.objects.get(label="grow").capacity_gib == 2


# --- review fixes (issue #11) -----------------------------------------------------------------------

def test_deleting_a_team_vm_keeps_a_members_own_disk_and_deletes_the_teams(test_host, alice, bob, driver):
    from django.contrib.auth.models import Group

    from quotas.models import Quota

    team = Group.objects.create(name="team-d")
    alice.groups.add(team)
    bob.groups.add(team)
    Quota.objects.create(group=team, max_vms=2, max_vcpus=4, max_memory_mib=2048, max_disk_gib=20)
    vm = make_vm(alice, name="team-1", group=team)
    job_ok(vm_disk_add(actor=alice, via="api", vm=vm, size_gib=1, label="teams")[1])  # the team's
    own, job, _ = vm_disk_add(actor=bob, via="api", vm=make_vm(bob, name="bobs"), size_gib=1, label="bobs-own")
    job_ok(job)
    job_ok(vm_disk_remove(actor=bob, via="api", vm=own.vm, disk="bobs-own")[1])
    job_ok(vm_disk_add(actor=bob, via="api", vm=vm, volume="bobs-own")[1])  # bob's own disk on the team's VM
    bobs = Volume.objects.get(label="bobs-own")
    assert (bobs.owner, bobs.group) == (bob, None)
    job_ok(services.vm_delete(actor=alice, via="api", vm=vm).job)
    assert not Volume.objects.filter(label="teams").exists()
    kept = Volume.objects.get(pk=bobs.pk)  # detached, still bob's (and on his quota)
    assert not VMDisk.objects.filter(volume=kept).exists()
    assert kept.name in {v.name for v in driver.list_volumes(pool=kept.pool.name)}


def test_disks_are_not_added_or_removed_while_the_vm_has_snapshots(test_host, alice):
    from vms.models import Snapshot

    vm = make_vm(alice)
    disk, job, _ = vm_disk_add(actor=alice, via="api", vm=vm, size_gib=1, label="before")
    job_ok(job)
    snap = Snapshot.objects.create(vm=vm, name="s1", status="ready")
    with pytest.raises(Conflict, match="it has 1 snapshot, which cover its disks as they are. Delete its snapshots"):
        vm_disk_add(actor=alice, via="api", vm=vm, size_gib=1, label="after")
    with pytest.raises(Conflict, match="Cannot remove a disk from web-1: it has 1 snapshot"):
        vm_disk_remove(actor=alice, via="api", vm=vm, disk="before")
    assert not Volume.objects.filter(label="after").exists()
    assert VMDisk.objects.get(pk=disk.pk).status == "attached"
    snap.delete()
    job_ok(vm_disk_remove(actor=alice, via="api", vm=vm, disk="before")[1])


def test_an_adopted_vms_disk_properties_are_its_own(test_host, alice, admin_user):
    from django.utils import timezone

    from vms.disks import vm_disk_change, vm_disk_update

    vm = make_vm(alice)
    VM.objects.filter(pk=vm.pk).update(adopted_at=timezone.now())
    for call in (lambda: vm_disk_update(actor=admin_user, via="api", vm=vm, disk="vda", properties={"cache": "none"}),
                 lambda: vm_disk_change(actor=admin_user, via="api", vm=vm, disk="vda", size_gib=1,
                                        properties={"cache": "none"})):
        with pytest.raises(Conflict, match="was adopted: its definition is its own"):
            call()
    assert VMDisk.objects.get(vm=vm, target="vda").properties in ({}, None)
    assert not Job.objects.filter(kind="vm.disk.update").exists()


def test_a_patch_with_size_and_properties_is_one_request(test_host, alice, admin_user):
    """Both together: the properties first, then the size; a refused grow (the test driver cannot grow)
    leaves the properties as they were; an unchanged size with new properties is the properties' job."""
    from vms.disks import vm_disk_change

    vm = make_vm(admin_user)
    disk, job, _ = vm_disk_add(actor=admin_user, via="api", vm=vm, size_gib=1, label="d")
    job_ok(job)
    with pytest.raises(Conflict, match="cannot grow disks"):
        vm_disk_change(actor=admin_user, via="api", vm=vm, disk="d", size_gib=2, properties={"cache": "none"})
    assert VMDisk.objects.get(pk=disk.pk).properties == {}
    _, job, message = vm_disk_change(actor=admin_user, via="api", vm=vm, disk="d", size_gib=1,
                                     properties={"cache": "none"})
    assert job_ok(job).kind == "vm.disk.update" and "already 1 GiB" in message and "Saved the properties" in message
    assert VMDisk.objects.get(pk=disk.pk).properties == {"cache": "none"}
