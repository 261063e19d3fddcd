"""Backups on the real qemu:///system hypervisor, one busybox guest for the module: data written on its
disk, a full backup, more data, an incremental backup; the chain restored to a new VM holds both, byte
for byte; a broken chain is refused; a pull backup's NBD export reads with qemu-img."""

from __future__ import annotations

import hashlib
import re
import subprocess

import pytest
from django.conf import settings

from backups import services
from backups.models import Backup
from portal.exceptions import Conflict
from portal.hypervisor import get_driver
from portal.models import Job
from tests.guest_shell import GuestShell
from vms import services as vm_services
from vms.models import VM

pytestmark = pytest.mark.qemu
MIB = 1024**2
REGION1, REGION2 = 512, 600  # MiB offsets on the 1 GiB disk, past the guest's 64 MiB root file system


def job_ok(job):
    job = Job.objects.get(pk=job.pk)
    assert job.status == "succeeded", f"{job.kind}: {job.status} {job.error}"
    return job


def write_region(shell: GuestShell, offset_mib: int) -> str:
    out = shell.run(f"dd if=/dev/urandom of=/dev/vda bs=1M seek={offset_mib} count=4 conv=fsync 2>/dev/null; "
                    f"dd if=/dev/vda bs=1M skip={offset_mib} count=4 2>/dev/null | sha256sum", timeout=60)
    found = re.search(r"\b[0-9a-f]{64}\b", out.output)  # the console may interleave kernel messages
    assert found, out.output
    return found.group(0)


def region_sha(raw: str, offset_mib: int) -> str:
    with open(raw, "rb") as fh:
        fh.seek(offset_mib * MIB)
        return hashlib.sha256(fh.read(4 * MIB)).hexdigest()


def backup(user, vm, **kw):
    b, job, _ = services.backup_create(actor=user, via="cli", vm=vm, **kw)
    job_ok(job)
    b.refresh_from_db()
    return b


def test_full_incremental_restore_broken_chain_and_pull(qemu_host, guest_image, alice, tmp_path):
    driver = get_driver(qemu_host.uri)
    result = vm_services.vm_create(actor=alice, via="cli", name="bk-guest", image=guest_image, vcpus=1,
                                   memory_mib=128, disk_gib=1)
    job_ok(result.job)
    vm = VM.objects.get(pk=result.vm.pk)
    made: list[Backup] = []
    try:
        with GuestShell(qemu_host.uri, str(vm.uuid)) as shell:
            shell.wait_ready(timeout=180)
            sum1 = write_region(shell, REGION1)
            full = backup(alice, vm)
            made.append(full)
            assert full.kind == "full" and full.status == "ready" and full.size_bytes > 0
            sum2 = write_region(shell, REGION2)
            inc = backup(alice, vm)
            made.append(inc)
            assert inc.kind == "incremental" and inc.parent_id == full.pk
            assert inc.size_bytes < full.size_bytes
            assert [full.checkpoint, inc.checkpoint] == driver.list_checkpoints(str(vm.uuid))

            # Pull mode: the running VM's disk is exported over NBD until the backup is finished.
            pull = backup(alice, vm, mode="pull")
            made.append(pull)
            assert pull.status == "running" and pull.nbd_uri.startswith("nbd://127.0.0.1:")
            info = subprocess.run(["qemu-img", "info", pull.nbd_uri], capture_output=True, text=True, timeout=60)
            assert info.returncode == 0 and "1 GiB" in info.stdout, info.stderr
            pulled = str(tmp_path / "pulled.raw")
            subprocess.run(["qemu-img", "convert", "-O", "raw", pull.nbd_uri, pulled], check=True, timeout=300)
            assert region_sha(pulled, REGION2) == sum2
            job_ok(services.backup_finish(actor=alice, via="cli", backup=pull)[1])

            # QEMU cannot revert a snapshot with memory while the disk has checkpoints' dirty bitmaps: the
            # revert drops them, and the next backup is a full one.
            snap = vm_services.snapshot_create(actor=alice, via="cli", vm=vm, name="with-cps")
            job_ok(snap.job)
            job_ok(vm_services.snapshot_revert(actor=alice, via="cli", vm=vm, snapshot="with-cps").job)
            assert driver.list_checkpoints(str(vm.uuid)) == []
            with pytest.raises(Conflict, match="checkpoint"):
                services.backup_create(actor=alice, via="cli", vm=vm, kind="incremental")
            job_ok(vm_services.snapshot_delete(actor=alice, via="cli", vm=vm, snapshot="with-cps").job)

        # The chain full <- incremental, restored to a new VM: both regions as the guest wrote them.
        new, job, _ = services.backup_restore(actor=alice, via="cli", backup=inc, name="bk-restored")
        job_ok(job)
        new.refresh_from_db()
        assert new.status == "stopped" and new.image_id == vm.image_id
        root = new.disks.get(target="vda").volume
        info = driver.volume_info(pool=root.pool.name, name=root.name)
        assert info.backing_path is None and info.capacity_bytes == 1024**3
        restored = str(tmp_path / "restored.raw")
        subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", info.path, restored], check=True, timeout=300)
        assert region_sha(restored, REGION1) == sum1
        assert region_sha(restored, REGION2) == sum2

        # A member's file gone: the chain is broken, nothing is made.
        driver.delete_volume(pool=full.pool.name, name=full.disks[0]["volume"])
        count = VM.objects.count()
        with pytest.raises(Conflict, match="broken"):
            services.backup_restore(actor=alice, via="cli", backup=inc, name="bk-broken")
        assert VM.objects.count() == count

        # A VM with checkpoints is deleted like any other (libvirt needs the checkpoints' metadata dropped).
        job_ok(vm_services.vm_delete(actor=alice, via="cli", vm=vm).job)
        assert not driver.domain_exists(str(vm.uuid))
    finally:
        for b in Backup.objects.filter(vm_name="bk-guest").order_by("-id"):
            for d in b.disks:
                try:
                    driver.delete_volume(pool=settings.BACKUP_POOL, name=d["volume"])
                except Exception:
                    pass
