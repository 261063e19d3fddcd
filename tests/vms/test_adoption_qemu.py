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
    assert vm.disks.get().volume.path == path  # the CD-ROM drive stays in the domain, unrecorded
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
