"""Backups: full and incremental backup (libvirt's push backup with checkpoints, through the portal's
services) vs `qemu-img convert` of the same disk, side by side in one run.

A firmware-only VM (SeaBIOS, no OS) runs on a 1 GiB disk holding DATA_MIB of random data. Each round:
a full backup; CHANGED_MIB written into the disk through QEMU's block layer (HMP `qemu-io`, so the
dirty bitmap sees it as a guest write); an incremental backup; and `qemu-img convert -U` of the disk's
chain into a standalone qcow2 (what a backup without the API would copy). Rounds interleave the three.
Results go to docs/benchmarks.md.

    .venv/bin/python benchmarks/bench_backup.py [--rounds 5] [--data-mib 256] [--changed-mib 32]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TMP = tempfile.mkdtemp(prefix="vmportal-bench-")
TAG = uuid.uuid4().hex[:6]
BACKUP_DIR = f"/var/lib/vmportal/bench-backups-{TAG}"
os.environ.update({
    "DJANGO_SETTINGS_MODULE": "portal.settings.base",
    "PORTAL_DATA_DIR": TMP,
    "PORTAL_TASKS_BACKEND": "django.tasks.backends.immediate.ImmediateBackend",
    "PORTAL_INSTANCE_ID": f"bench-{TAG}",
    "PORTAL_DOMAIN_PREFIX": "vmpbench",
    "PORTAL_LOG_LEVEL": "WARNING",
    "PORTAL_BACKUP_POOL": f"vmpbench-backups-{TAG}",
    "PORTAL_BACKUP_DIR": BACKUP_DIR,
})
os.environ.pop("PORTAL_DATABASE_URL", None)

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402

from backups import services as backups  # noqa: E402
from backups.models import Backup  # noqa: E402
from benchmarks.report import write_section  # noqa: E402
from cluster.services import host_register  # noqa: E402
from quotas.models import Quota  # noqa: E402
from storage.models import Image  # noqa: E402
from storage.services import image_delete, image_register  # noqa: E402
from vms import services  # noqa: E402
from vms.models import VM  # noqa: E402

URI = "qemu:///system"
MIB = 1024**2


def ok(job) -> None:
    job.refresh_from_db()
    assert job.status == "succeeded", f"{job.kind}: {job.error}"


def backup(user, vm: VM) -> tuple[float, Backup]:
    t0 = time.perf_counter()
    made, job, _ = backups.backup_create(actor=user, via="cli", vm=vm)
    ok(job)
    elapsed = time.perf_counter() - t0
    made.refresh_from_db()
    return elapsed, made


def write_changes(vm: VM, offset_mib: int, mib: int) -> None:
    """CHANGED_MIB of new data into the running VM's disk through QEMU's block layer (as a guest would)."""
    cmd = f"qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend \"write -P 0x{offset_mib % 251 + 1:02x} {offset_mib}M {mib}M\""
    done = subprocess.run(["virsh", "-c", URI, "qemu-monitor-command", str(vm.uuid), "--hmp", cmd], check=True,
                          capture_output=True, text=True)
    if "rror" in done.stdout or "onflict" in done.stdout:
        raise RuntimeError(f"qemu-io did not write: {done.stdout.strip()} {done.stderr.strip()}")


def row(label: str, times: list[float], sizes: list[int]) -> str:
    return (f"| {label} | {statistics.median(times):.3f} | {min(times):.3f} | {max(times):.3f} | "
            f"{statistics.median(sizes) / MIB:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-mib", type=int, default=256)
    parser.add_argument("--changed-mib", type=int, default=32)
    args = parser.parse_args()
    lock = open("/tmp/vmportal-qemu.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    call_command("migrate", verbosity=0)
    host = host_register(actor=None, name="bench", uri=URI, domain_type="qemu")
    raw, src = Path(TMP) / "data.raw", Path(TMP) / "data.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(raw), "1G"], check=True)
    with open(raw, "r+b") as fh:
        for _ in range(args.data_mib):
            fh.write(os.urandom(MIB))
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(src)], check=True)
    raw.unlink()
    admin = get_user_model().objects.create_user("bench-admin", password="x", is_staff=True, is_superuser=True)
    user = get_user_model().objects.create_user("bench", password="x")
    Quota.objects.create(user=user, max_vms=10, max_vcpus=10, max_memory_mib=10**5, max_disk_gib=10**4,
                         max_backup_gib=10**5)
    image = image_register(actor=None, host=host, name="bench-data", title="bench data", source_path=str(src),
                           is_default=True, replace=True)
    src.unlink()
    full_t: list[float] = []
    full_s: list[int] = []
    inc_t: list[float] = []
    inc_s: list[int] = []
    conv_t: list[float] = []
    conv_s: list[int] = []
    vm = None
    try:
        created = services.vm_create(actor=user, via="cli", name="bk", image=image, vcpus=1, memory_mib=64,
                                     disk_gib=1)
        ok(created.job)
        vm = VM.objects.get(pk=created.vm.pk)
        disk = vm.disks.get(target="vda").volume
        for i in range(args.rounds):
            t, full = backup(user, vm)
            assert full.kind == "full"
            full_t.append(t)
            full_s.append(full.size_bytes)
            write_changes(vm, 300 + i * args.changed_mib, args.changed_mib)
            t, inc = backup(user, vm)
            assert inc.kind == "incremental", inc.kind
            inc_t.append(t)
            inc_s.append(inc.size_bytes)
            dest = Path(BACKUP_DIR) / f"convert-{i}.qcow2"
            t0 = time.perf_counter()
            subprocess.run(["qemu-img", "convert", "-U", "-O", "qcow2", disk.path, str(dest)], check=True)
            conv_t.append(time.perf_counter() - t0)
            conv_s.append(os.stat(dest).st_blocks * 512)
            dest.unlink()
            for b in (inc, full):
                ok(backups.backup_delete(actor=user, via="cli", backup=b)[1])
    finally:
        if vm is not None:
            for b in Backup.objects.filter(vm=vm).order_by("-id"):
                backups.backup_delete(actor=admin, via="cli", backup=b)
            ok(services.vm_delete(actor=admin, via="cli", vm=vm).job)
        image_delete(actor=admin, via="cli", image=Image.objects.get(pk=image.pk))
        for cmd in ("pool-destroy", "pool-undefine"):
            subprocess.run(["virsh", "-c", URI, cmd, settings.BACKUP_POOL], capture_output=True)
        shutil.rmtree(BACKUP_DIR, ignore_errors=True)
    lines = [
        f"One running firmware-only VM on a 1 GiB qcow2 disk (thin overlay on a base holding {args.data_mib} MiB "
        f"of random data), {args.rounds} interleaved rounds on `{URI}`, {time.strftime('%Y-%m-%d')}. Each round: "
        f"a full backup, {args.changed_mib} MiB written through QEMU's block layer, an incremental backup, then "
        "`qemu-img convert -U -O qcow2` of the disk's chain. Backup times are the portal's whole path "
        "(`backup_create`: record phase, job, libvirt push backup with a new checkpoint, wait, sizes).",
        "",
        "| what | median s | min | max | stored MiB (median) |",
        "|---|---|---|---|---|",
        row("full backup (push, checkpoint)", full_t, full_s),
        row(f"incremental backup ({args.changed_mib} MiB changed)", inc_t, inc_s),
        row("qemu-img convert of the disk", conv_t, conv_s),
        "",
        f"**Incremental / full (median time): {statistics.median(inc_t) / statistics.median(full_t):.2f}×; "
        f"full backup / qemu-img convert: {statistics.median(full_t) / statistics.median(conv_t):.2f}×.** "
        "The incremental copies only the clusters the dirty bitmap marks; a full backup reads the same data "
        "as `qemu-img convert` but from the running VM, consistent at one instant, without pausing it.",
    ]
    write_section("backups", "Backups: full and incremental vs qemu-img convert", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
