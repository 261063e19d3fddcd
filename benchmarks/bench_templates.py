"""VMs from one template: N thin clones vs N full copies, through the portal's services.

A template holding DATA_MIB of incompressible data (in a 1 GiB virtual disk) is sealed from a stopped
VM with vm_template_create; then N VMs are created from it as thin clones (qcow2 overlays on its base)
and N as full copies (storageVolCreateXMLFrom, backing chain flattened), interleaved in one run on
qemu:///system. Each create is vm_create(start=False): the record phase and the create job, whose work
is the disk's materialization and the domain's definition (no VM boots). Results go to
docs/benchmarks.md.

    .venv/bin/python benchmarks/bench_templates.py [--n 20] [--data-mib 256]
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
os.environ.update({
    "DJANGO_SETTINGS_MODULE": "portal.settings.base",
    "PORTAL_DATA_DIR": TMP,
    "PORTAL_TASKS_BACKEND": "django.tasks.backends.immediate.ImmediateBackend",
    "PORTAL_INSTANCE_ID": f"bench-{uuid.uuid4().hex[:6]}",
    "PORTAL_DOMAIN_PREFIX": "vmpbench",
    "PORTAL_LOG_LEVEL": "WARNING",
})
os.environ.pop("PORTAL_DATABASE_URL", None)

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402

from benchmarks.report import write_section  # noqa: E402
from cluster.services import host_register  # noqa: E402
from portal.hypervisor import get_driver  # noqa: E402
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


def create(user, name: str, template: Image, clone: str) -> tuple[float, VM]:
    t0 = time.perf_counter()
    result = services.vm_create(actor=user, via="cli", name=name, image=template, clone=clone, start=False)
    ok(result.job)
    return time.perf_counter() - t0, result.vm


def stored_bytes(vm: VM) -> int:
    volume = vm.disks.get(target="vda").volume
    return get_driver(URI).volume_info(pool=volume.pool.name, name=volume.name).allocation_bytes


def row(label: str, times: list[float], stored: list[int]) -> str:
    return (f"| {label} | {statistics.median(times):.3f} | {statistics.mean(times):.3f} | {min(times):.3f} | "
            f"{max(times):.3f} | {sum(times):.1f} | {statistics.median(stored) / MIB:.1f} | "
            f"{sum(stored) / MIB:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--data-mib", type=int, default=256)
    args = parser.parse_args()
    lock = open("/tmp/vmportal-qemu.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    call_command("migrate", verbosity=0)
    host = host_register(actor=None, name="bench", uri=URI, domain_type="qemu")
    # A 1 GiB disk image with DATA_MIB of random data at its start (a qcow2 stores only what was written).
    raw, src = Path(TMP) / "data.raw", Path(TMP) / "data.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(raw), "1G"], check=True)
    with open(raw, "r+b") as fh:
        for _ in range(args.data_mib):
            fh.write(os.urandom(MIB))
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(src)], check=True)
    raw.unlink()
    admin = get_user_model().objects.create_user("bench-admin", password="x", is_staff=True, is_superuser=True)
    user = get_user_model().objects.create_user("bench", password="x")
    Quota.objects.create(user=user, max_vms=1000, max_vcpus=1000, max_memory_mib=10**6, max_disk_gib=10**5)
    image = image_register(actor=None, host=host, name="bench-data", title="bench data", source_path=str(src),
                           is_default=True, replace=True)
    src.unlink()
    vms: list[VM] = []
    thin: list[float] = []
    full: list[float] = []
    thin_stored: list[int] = []
    full_stored: list[int] = []
    template = None
    try:
        gold = services.vm_create(actor=user, via="cli", name="gold", image=image, vcpus=1, memory_mib=64,
                                  disk_gib=1, start=False)
        ok(gold.job)
        vms.append(gold.vm)
        t0 = time.perf_counter()
        ok(services.vm_template_create(actor=user, via="cli", vm=gold.vm, name="bench-tpl"))
        seal = time.perf_counter() - t0
        template = Image.objects.get(name="bench-tpl")
        for i in range(args.n):  # interleaved: each pair sees the same state of the host's caches
            t, vm = create(user, f"thin-{i}", template, "thin")
            thin.append(t)
            thin_stored.append(stored_bytes(vm))
            vms.append(vm)
            t, vm = create(user, f"full-{i}", template, "full")
            full.append(t)
            full_stored.append(stored_bytes(vm))
            vms.append(vm)
    finally:
        for vm in vms:
            ok(services.vm_delete(actor=admin, via="cli", vm=vm).job)
        for img in (template, image):
            if img is not None:
                image_delete(actor=admin, via="cli", image=Image.objects.get(pk=img.pk))
    ratio = statistics.median(full) / statistics.median(thin)
    lines = [
        f"{args.n} VMs from one template as thin clones and {args.n} as full copies, interleaved, on `{URI}`, "
        f"{time.strftime('%Y-%m-%d')}. The template (1 GiB virtual, {args.data_mib} MiB of random data, "
        f"{template.actual_size_bytes / MIB:.0f} MiB stored) was sealed from a stopped VM in {seal:.2f} s. "
        "Each create is `vm_create(start=False)`: record phase plus the create job (disk, domain definition; "
        "no boot).",
        "",
        "| clone | median s / VM | mean | min | max | total s | stored MiB / VM (median) | stored MiB total |",
        "|---|---|---|---|---|---|---|---|",
        row("thin (qcow2 overlay)", thin, thin_stored),
        row("full (flattened copy)", full, full_stored),
        "",
        f"**Full / thin (median): {ratio:.1f}×.** A thin clone costs the same whatever the template holds "
        "(an empty overlay); a full copy reads and writes all of the template's data, so its time and space "
        "grow with it — in exchange it is independent of the template (which may then be deleted) and "
        "reads no shared base.",
    ]
    write_section("templates", "Templates: thin clones vs full copies", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)  # its database and the image file
