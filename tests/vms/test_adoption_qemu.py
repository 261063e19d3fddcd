"""Adoption on the real qemu:///system hypervisor: a domain made with `virsh` keeps its QEMU process.

A firmware-only domain (SeaBIOS, no OS: it starts in a fraction of a second) whose disk is a qcow2
volume of the portal's pool is defined and started with virsh, listed as foreign by reconcile, adopted
(same QEMU PID), power-cycled, snapshotted and reverted through the portal (its own definition kept),
released (still the same process, foreign again), adopted again and deleted through the portal.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from django.conf import settings

from cluster.models import ForeignDomain
from cluster.services import host_sync
from portal.hypervisor import PowerState, get_driver
from portal.models import Job
from vms import services
from vms.adoption import vm_adopt, vm_release
from vms.choices import VMStatus
from vms.models import VM

pytestmark = pytest.mark.qemu

NAME = f"{settings.DOMAIN_PREFIX}-adopt-legacy"
VOLUME = f"{settings.DOMAIN_PREFIX}-adopt-legacy.qcow2"


def virsh(uri: str, *args: str) -> str:
    return subprocess.run(["virsh", "-c", uri, *args], check=True, capture_output=True, text=True,
                          timeout=60).stdout.strip()


def qemu_pid(name: str) -> int:
    """The domain's QEMU process, from libvirt's pid file (checked against /proc)."""
    pid = int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())
    assert Path(f"/proc/{pid}").exists()
    return pid


def job_ok(result):
    job = Job.objects.get(pk=result.job.pk)
    assert job.status == "succeeded", f"{job.kind}: {job.status} {job.error}"
    return job


def wait_for(condition, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def legacy_domain(qemu_host, tmp_path):
    """Defined and started with virsh, outside the portal; removed afterwards whatever happened."""
    uri = qemu_host.uri
    virsh(uri, "vol-create-as", settings.STORAGE_POOL, VOLUME, "16M", "--format", "qcow2")
    path = virsh(uri, "vol-path", "--pool", settings.STORAGE_POOL, VOLUME)
    xml = tmp_path / "legacy.xml"
    xml.write_text(f"""<domain type='qemu'>
  <name>{NAME}</name>
  <title>Legacy Box</title>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <on_crash>restart</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{path}'/>
      <target dev='sda' bus='sata'/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/>
  </devices>
</domain>""")
    virsh(uri, "define", str(xml))
    virsh(uri, "start", NAME)
    uuid = virsh(uri, "domuuid", NAME)
    yield uuid, path
    driver = get_driver(uri)
    driver.undefine(uuid)
    driver.delete_volume(pool=settings.STORAGE_POOL, name=VOLUME)


def test_a_virsh_domain_is_adopted_without_restart_managed_released_and_deleted(qemu_host, legacy_domain,
                                                                                 admin_user, alice):
    uuid, path = legacy_domain
    driver = get_driver(qemu_host.uri)
    pid = qemu_pid(NAME)
    host_sync(host=qemu_host)
    assert ForeignDomain.objects.get(host=qemu_host, uuid=uuid).state == "running"

    vm = vm_adopt(actor=admin_user, via="cli", host=qemu_host, uuid=uuid, owner=alice)

    assert qemu_pid(NAME) == pid  # the same QEMU process: not restarted
    assert (vm.name, vm.status, vm.vcpus, vm.memory_mib, vm.disk_gib) == ("legacy-box", VMStatus.RUNNING, 1, 64, 1)
    assert vm.disks.get().volume.path == path
    assert (vm.cdrom_drive, vm.cdrom_target, vm.cdrom_bus, vm.cdrom) == (True, "hdc", "ide", None)  # its empty drive
    for flags in ((), ("--inactive",)):  # live and persistent definitions both carry the metadata
        assert f"<portal:vm-id>{vm.pk}</portal:vm-id>" in virsh(qemu_host.uri, "dumpxml", NAME, *flags)
    host_sync(host=qemu_host)
    assert not ForeignDomain.objects.filter(uuid=uuid).exists()
    assert VM.objects.get(pk=vm.pk).status == VMStatus.RUNNING

    # managed like any portal VM (no OS: Force off rather than the ACPI Stop)
    job_ok(services.vm_force_off(actor=alice, via="cli", vm=vm))
    assert driver.domain_info(uuid).state == PowerState.SHUTOFF
    job_ok(services.vm_start(actor=alice, via="cli", vm=vm))
    assert driver.domain_info(uuid).state == PowerState.RUNNING
    snap = services.snapshot_create(actor=alice, via="cli", vm=vm, name="before")
    job_ok(snap)
    job_ok(services.snapshot_revert(actor=alice, via="cli", vm=vm, snapshot="before"))
    inactive = virsh(qemu_host.uri, "dumpxml", NAME, "--inactive")
    assert "<on_crash>restart</on_crash>" in inactive and "device='cdrom'" in inactive  # never rewritten
    assert f"<portal:vm-id>{vm.pk}</portal:vm-id>" in inactive
    job_ok(services.snapshot_delete(actor=alice, via="cli", vm=vm, snapshot="before"))

    # released: the portal forgets it, the same process runs on, listed as foreign again
    wait_for(lambda: VM.objects.get(pk=vm.pk).status == VMStatus.RUNNING, "the VM to settle")
    pid = qemu_pid(NAME)
    vm_release(actor=admin_user, via="cli", vm=vm)
    assert qemu_pid(NAME) == pid
    assert "portal:vm" not in virsh(qemu_host.uri, "dumpxml", NAME, "--inactive")
    host_sync(host=qemu_host)
    assert ForeignDomain.objects.get(uuid=uuid).owner_hint == ""

    # adopted again, then deleted through the portal: the domain and its volume go
    vm = vm_adopt(actor=admin_user, via="cli", host=qemu_host, uuid=uuid, owner=alice, name="legacy-2")
    assert qemu_pid(NAME) == pid
    job_ok(services.vm_delete(actor=alice, via="cli", vm=vm))
    assert not driver.domain_exists(uuid)
    assert not Path(path).exists()


Q35_NAME = f"{settings.DOMAIN_PREFIX}-adopt-q35"
Q35_VOLUME = f"{settings.DOMAIN_PREFIX}-adopt-q35.qcow2"


@pytest.fixture
def q35_domain(qemu_host, tmp_path):
    """A stopped q35 domain (no IDE there) with a direct kernel boot and its own reboot policy, defined with
    virsh and never started: media changes are definition edits."""
    uri = qemu_host.uri
    virsh(uri, "vol-create-as", settings.STORAGE_POOL, Q35_VOLUME, "16M", "--format", "qcow2")
    path = virsh(uri, "vol-path", "--pool", settings.STORAGE_POOL, Q35_VOLUME)
    xml = tmp_path / "q35.xml"
    xml.write_text(f"""<domain type='qemu'>
  <name>{Q35_NAME}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type><kernel>/srv/boot/vmlinuz-legacy</kernel>
    <cmdline>console=ttyS0 legacy=1</cmdline></os>
  <on_reboot>destroy</on_reboot>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{path}'/>
      <target dev='sda' bus='sata'/>
    </disk>
  </devices>
</domain>""")
    virsh(uri, "define", str(xml))
    uuid = virsh(uri, "domuuid", Q35_NAME)
    yield uuid
    driver = get_driver(uri)
    if driver.domain_exists(uuid):
        driver.undefine(uuid)
    driver.delete_volume(pool=settings.STORAGE_POOL, name=Q35_VOLUME)


def test_a_cd_goes_into_an_adopted_q35_domain_as_a_sata_drive_and_nothing_else_changes(
        qemu_host, q35_domain, admin_user, alice):
    from storage.models import Image
    from storage.services import image_delete
    from tests.vms.test_cdrom import _register_iso

    uuid = q35_domain
    driver = get_driver(qemu_host.uri)
    iso = _register_iso(qemu_host, "adopt-q35-iso")
    vm = vm_adopt(actor=admin_user, via="cli", host=qemu_host, uuid=uuid, owner=alice)
    assert vm.status == VMStatus.STOPPED and not vm.cdrom_drive

    job_ok(services.vm_cdrom_insert(actor=alice, via="cli", vm=vm, image=iso))
    vm = VM.objects.get(pk=vm.pk)
    assert (vm.cdrom_target, vm.cdrom_bus, vm.cdrom_id) == ("sdb", "sata", iso.pk)  # q35 has no IDE
    assert [(c.target, c.bus, c.path) for c in driver.domain_cdroms(uuid, inactive=True)] == [
        ("sdb", "sata", iso.path)]
    inactive = virsh(qemu_host.uri, "dumpxml", Q35_NAME, "--inactive")
    assert "<kernel>/srv/boot/vmlinuz-legacy</kernel>" in inactive and "legacy=1" in inactive
    assert "<on_reboot>destroy</on_reboot>" in inactive and "machine='pc-q35" in inactive
    with pytest.raises(Exception, match="Eject it first"):
        vm_release(actor=admin_user, via="cli", vm=vm)

    job_ok(services.vm_cdrom_eject(actor=alice, via="cli", vm=vm))
    assert [c.path for c in driver.domain_cdroms(uuid, inactive=True)] == [None]
    vm_release(actor=admin_user, via="cli", vm=vm)
    image_delete(actor=admin_user, via="cli", image=iso)
    assert not Image.objects.filter(pk=iso.pk).exists()
    assert "<kernel>/srv/boot/vmlinuz-legacy</kernel>" in virsh(qemu_host.uri, "dumpxml", Q35_NAME, "--inactive")
