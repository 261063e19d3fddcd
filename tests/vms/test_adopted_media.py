"""Adopted VMs' CD-ROM drives and templates, on libvirt's test driver.

An adopted domain's definition is its own: inserting or ejecting a CD changes that drive only (never a
definition written again from the portal's record), a portal image in its drive at adoption is recorded
(so it cannot be deleted under it, and release waits for an eject), a snapshot revert puts the record's
media back, and a template is made of its boot disk alone, into the portal's pool.

Jobs run on commit (ImmediateBackend): when a service returns, its job has run.
"""

from __future__ import annotations

import uuid as uuidlib
import xml.etree.ElementTree as ET

import pytest
from django.conf import settings

from portal.exceptions import Conflict
from portal.hypervisor import CdromSpec, DiskSpec, DomainSpec, get_driver
from portal.models import AuditEvent, Job
from storage.models import Image, StoragePool
from storage.services import image_delete
from tests.vms.test_adoption import adopt, define_foreign
from tests.vms.test_cdrom import _register_iso
from vms import services
from vms.adoption import adoption_plan, vm_release
from vms.choices import VMStatus
from vms.models import VM

pytestmark = pytest.mark.django_db(transaction=True)
URI = "test:///default"
GIB = 1024**3


@pytest.fixture
def isos(test_host):
    return {"a": _register_iso(test_host, "installer-a"), "b": _register_iso(test_host, "installer-b")}


def driver():
    return get_driver(URI)


def fresh(vm) -> VM:
    return VM.objects.select_related("cdrom").get(pk=vm.pk)


def cdroms(vm) -> list[CdromSpec]:
    return driver().domain_cdroms(str(vm.uuid), inactive=True)


def without_cdroms(uuid: str) -> str:
    """The domain's definition with its CD-ROM drives (and the IDE controller libvirt adds for one) taken
    out: what must not change when media does."""
    root = ET.fromstring(driver().domain_xml(uuid, inactive=True))
    devices = root.find("devices")
    assert devices is not None
    for device in devices.findall("disk[@device='cdrom']") + devices.findall("controller[@type='ide']"):
        devices.remove(device)
    return ET.tostring(root, encoding="unicode")


def foreign_with(name="legacy", *, cdroms=(), kernel=None, start=False, disk_gib=2):
    """A stopped foreign domain (sda on SCSI), with `cdroms` and an optional direct kernel boot."""
    drv = driver()
    vol = drv.create_volume(pool=settings.STORAGE_POOL, name=f"{settings.DOMAIN_PREFIX}-{name}.qcow2",
                            capacity_bytes=disk_gib * GIB)
    spec = DomainSpec(name=f"{settings.DOMAIN_PREFIX}-{name}", uuid=str(uuidlib.uuid4()), vcpus=1, memory_mib=256,
                      domain_type="test", title=name, disks=(DiskSpec(path=vol.path, target="sda", bus="scsi"),),
                      cdroms=tuple(cdroms), kernel=kernel, cmdline="console=ttyS0" if kernel else None,
                      graphics=False)
    drv.define(spec)
    if start:
        drv.start(spec.uuid)
    return spec


# --- 1. media changes touch the drive only ----------------------------------------------------------

def test_inserting_into_a_stopped_adopted_vm_adds_only_the_drive(test_host, admin_user, alice, isos):
    spec = foreign_with(kernel="/boot/vmlinuz-legacy")
    vm = adopt(admin_user, spec, test_host, alice)
    assert not vm.cdrom_drive
    before = without_cdroms(spec.uuid)
    result = services.vm_cdrom_insert(actor=alice, via="cli", vm=vm, image="installer-a")
    result.job.refresh_from_db()
    assert result.job.status == "succeeded", result.job.error
    vm = fresh(vm)
    assert vm.cdrom_drive and vm.cdrom == isos["a"] and (vm.cdrom_target, vm.cdrom_bus) == ("hdc", "ide")
    assert cdroms(vm) == [CdromSpec(target="hdc", bus="ide", path=isos["a"].path)]
    assert without_cdroms(spec.uuid) == before  # kernel boot, boot order, devices: all its own still
    assert "/boot/vmlinuz-legacy" in driver().domain_xml(spec.uuid, inactive=True)
    services.vm_cdrom_eject(actor=alice, via="cli", vm=vm)
    assert cdroms(vm) == [CdromSpec(target="hdc", bus="ide", path=None)]
    assert without_cdroms(spec.uuid) == before


def test_an_adopted_domains_own_drive_is_recorded_and_used(test_host, admin_user, alice, isos, client):
    """Its drive (on SATA, sdb) holds media that is not the portal's: recorded as the VM's drive, the media
    left in it; inserting replaces the media in that drive, no second drive is added."""
    own = CdromSpec(target="sdb", bus="sata", path="/srv/isos/vendor-tools.iso")
    spec = foreign_with(cdroms=(own,))
    plan = adoption_plan(actor=admin_user, host=test_host, uuid=spec.uuid)
    assert any("sdb" in note and "not a portal image" in note for note in plan.left_alone)
    vm = fresh(adopt(admin_user, spec, test_host, alice))
    assert vm.cdrom_drive and vm.cdrom is None and (vm.cdrom_target, vm.cdrom_bus) == ("sdb", "sata")
    assert cdroms(vm) == [own]  # not lost
    client.force_login(admin_user)
    page = client.get(f"/admin/vms/vm/{vm.pk}/change/").content.decode()
    assert "Drive (SATA sdb): no portal ISO in it" in page
    assert services.vm_cdrom_eject(actor=alice, via="cli", vm=vm).message.startswith("No portal ISO is in")
    assert cdroms(vm) == [own]
    before = without_cdroms(spec.uuid)
    services.vm_cdrom_insert(actor=alice, via="cli", vm=vm, image="installer-b")
    assert cdroms(vm) == [CdromSpec(target="sdb", bus="sata", path=isos["b"].path)]
    assert without_cdroms(spec.uuid) == before


# --- 2. a portal image in an adopted or released domain's drive -------------------------------------

def test_a_portal_iso_in_the_drive_at_adoption_is_protected_and_release_waits_for_an_eject(
        test_host, admin_user, alice, isos):
    spec = foreign_with(cdroms=(CdromSpec(target="hdc", bus="ide", path=isos["a"].path),))
    vm = fresh(adopt(admin_user, spec, test_host, alice))
    assert vm.cdrom == isos["a"] and vm.cdrom_drive
    with pytest.raises(Conflict):
        image_delete(actor=admin_user, via="cli", image=isos["a"])
    with pytest.raises(Conflict, match="Eject it first"):
        vm_release(actor=admin_user, via="cli", vm=vm)
    assert VM.objects.filter(pk=vm.pk).exists()
    assert AuditEvent.objects.filter(action="vm.release", outcome="denied").exists()
    services.vm_cdrom_eject(actor=alice, via="cli", vm=vm)
    vm_release(actor=admin_user, via="cli", vm=vm)
    assert not VM.objects.filter(pk=vm.pk).exists()
    assert driver().domain_cdroms(spec.uuid, inactive=True) == [CdromSpec(target="hdc", bus="ide", path=None)]


def test_a_portal_image_in_a_second_drive_is_a_problem(test_host, admin_user, isos):
    spec = foreign_with(cdroms=(CdromSpec(target="hdc", bus="ide", path=isos["a"].path),
                                CdromSpec(target="hdd", bus="ide", path=isos["b"].path)))
    plan = adoption_plan(actor=admin_user, host=test_host, uuid=spec.uuid)
    assert any("hdd" in p and "installer-b" in p and "Eject it first" in p for p in plan.problems)


# --- 3. a revert puts the record's media back --------------------------------------------------------

def _snapshot(user, vm, name):
    job = services.snapshot_create(actor=user, via="cli", vm=vm, name=name).job
    job.refresh_from_db()
    assert job.status == "succeeded", job.error


def _revert(user, vm, name):
    job = services.snapshot_revert(actor=user, via="cli", vm=vm, snapshot=name).job
    job.refresh_from_db()
    assert job.status == "succeeded", job.error


def test_a_revert_of_an_adopted_vm_keeps_the_records_media(test_host, admin_user, alice, isos):
    spec = foreign_with(kernel="/boot/vmlinuz-legacy")
    vm = adopt(admin_user, spec, test_host, alice)
    services.vm_cdrom_insert(actor=alice, via="cli", vm=vm, image="installer-a")
    _snapshot(alice, vm, "with-a")
    services.vm_cdrom_eject(actor=alice, via="cli", vm=vm)
    _revert(alice, vm, "with-a")
    vm = fresh(vm)
    assert vm.cdrom is None and cdroms(vm) == [CdromSpec(target="hdc", bus="ide", path=None)]
    image_delete(actor=admin_user, via="cli", image=isos["a"])  # nothing points at it: deleting it is safe
    services.vm_cdrom_insert(actor=alice, via="cli", vm=vm, image="installer-b")
    _snapshot(alice, vm, "with-b")
    isos["c"] = _register_iso(test_host, "installer-c")
    services.vm_cdrom_insert(actor=alice, via="cli", vm=vm, image="installer-c")
    _revert(alice, vm, "with-b")
    assert cdroms(vm) == [CdromSpec(target="hdc", bus="ide", path=isos["c"].path)]
    assert "/boot/vmlinuz-legacy" in driver().domain_xml(spec.uuid, inactive=True)  # still its own definition


def test_a_revert_leaves_the_adopted_domains_own_media(test_host, admin_user, alice):
    own = CdromSpec(target="hdc", bus="ide", path="/srv/isos/vendor-tools.iso")
    spec = foreign_with(cdroms=(own,))
    vm = adopt(admin_user, spec, test_host, alice)
    _snapshot(alice, vm, "s1")
    _revert(alice, vm, "s1")
    assert cdroms(vm) == [own]


def test_when_the_drive_cannot_follow_a_revert_the_record_follows_the_drive(test_host, admin_user, alice, isos):
    """A running revert brings back an ISO the record no longer holds; the test driver cannot change media
    in a running guest, so the record takes that ISO (it stays protected) and the VM says why."""
    vm = services.vm_create(actor=alice, via="cli", name="inst-1", image="installer-a", vcpus=1, memory_mib=128,
                            disk_gib=1).vm
    _snapshot(alice, vm, "installing")
    services.vm_stop(actor=alice, via="cli", vm=vm)
    services.vm_cdrom_eject(actor=alice, via="cli", vm=vm)
    services.vm_start(actor=alice, via="cli", vm=vm)
    assert fresh(vm).cdrom is None
    _revert(alice, vm, "installing")
    vm = fresh(vm)
    assert vm.status == VMStatus.RUNNING and vm.cdrom == isos["a"]
    assert "installer-a" in vm.last_error and "now the VM's media" in vm.last_error
    with pytest.raises(Conflict):
        image_delete(actor=admin_user, via="cli", image=isos["a"])


# --- 5, 6. templates of adopted VMs -------------------------------------------------------------------

OTHER_POOL = "fixvm-other"


@pytest.fixture
def other_pool(test_host):
    """A second libvirt pool on the test host (an adopted VM's disks often live in a pool of their own)."""
    drv = driver()
    drv.ensure_pool(OTHER_POOL, f"/{OTHER_POOL}")
    yield OTHER_POOL
    for v in drv.list_volumes(pool=OTHER_POOL):
        drv.delete_volume(pool=OTHER_POOL, name=v.name)
    pool = drv.connection().storagePoolLookupByName(OTHER_POOL)
    pool.destroy()
    pool.undefine()


def test_a_template_of_a_multi_disk_adopted_vm_is_its_boot_disk_in_the_portals_pool(
        test_host, admin_user, alice, other_pool):
    drv = driver()
    boot = drv.create_volume(pool=other_pool, name="legacy-boot.qcow2", capacity_bytes=2 * GIB)
    data = drv.create_volume(pool=other_pool, name="legacy-data.qcow2", capacity_bytes=9 * GIB)
    spec = define_foreign("legacy", start=False, disks=(DiskSpec(path=boot.path, target="sda", bus="scsi"),
                                                        DiskSpec(path=data.path, target="sdb", bus="scsi")))
    vm = adopt(admin_user, spec, test_host, alice)
    assert vm.disk_gib == 11  # alice may use 20 GiB: a template charged 11 more would not fit
    job = services.vm_template_create(actor=alice, via="cli", vm=vm, name="tpl-legacy")
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    template = Image.objects.select_related("pool").get(name="tpl-legacy")
    assert template.size_bytes == 2 * GIB and template.min_disk_gib == 2  # the boot disk, sda, alone
    assert template.pool == StoragePool.objects.get(host=test_host, name=settings.STORAGE_POOL)
    assert template.volume_name in {v.name for v in drv.list_volumes(pool=settings.STORAGE_POOL)}
    requested = AuditEvent.objects.get(action="vm.template", outcome="requested")
    assert requested.data["disk"] == "sda" and requested.data["disk_gib"] == 2
    # Made in the portal's pool, the template gives full copies and thin clones alike.
    full = services.vm_create(actor=alice, via="cli", name="full-1", image=template, clone="full",
                              start=False).vm
    assert fresh(full).status == VMStatus.STOPPED
    assert full.disks.get(target="vda").volume.copy_of == template
    assert not Job.objects.filter(status="failed").exists()
