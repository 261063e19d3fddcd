"""Create + start + delete of N firmware-only VMs: through the portal's services vs raw libvirt-python.

Both sides do the same hypervisor work per VM (a qcow2 overlay volume, define, start, destroy,
undefine, delete the volume), interleaved in one run on qemu:///system, so the ratio shows what the
service layer (validation, quota lock, rows, jobs, audit) adds. Results go to docs/benchmarks.md.

    .venv/bin/python benchmarks/bench_vm_lifecycle.py [--n 10]
"""

from __future__ import annotations

import argparse
import fcntl
import os
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

import libvirt  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402

from benchmarks.report import write_section  # noqa: E402
from cluster.services import host_register  # noqa: E402
from portal.hypervisor import DiskSpec, DomainSpec  # noqa: E402
from portal.hypervisor.domain_xml import build_domain_xml, volume_xml  # noqa: E402
from quotas.models import Quota  # noqa: E402
from storage.models import Image  # noqa: E402
from storage.services import image_register  # noqa: E402
from vms import services  # noqa: E402

URI = "qemu:///system"


def raw_cycle(conn, base_path: str) -> float:
    """The same libvirt calls the portal makes, with nothing around them."""
    t0 = time.perf_counter()
    u = str(uuid.uuid4())
    name = f"vmpbench-raw-{u[:8]}"
    pool = conn.storagePoolLookupByName(settings.STORAGE_POOL)
    vol = pool.createXML(volume_xml(name=f"{name}-disk0.qcow2", capacity_bytes=1024**3,
                                    backing_path=base_path), 0)
    spec = DomainSpec(name=name, uuid=u, vcpus=1, memory_mib=64, domain_type="qemu",
                      disks=(DiskSpec(path=vol.path()),))
    dom = conn.defineXML(build_domain_xml(spec))
    dom.create()
    dom.destroy()
    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    vol.delete(0)
    return time.perf_counter() - t0


def portal_cycle(user, i: int) -> float:
    t0 = time.perf_counter()
    result = services.vm_create(actor=user, via="cli", name=f"bench-{i}", vcpus=1, memory_mib=64, disk_gib=1)
    result.job.refresh_from_db()
    assert result.job.status == "succeeded", result.job.error
    deleted = services.vm_delete(actor=user, via="cli", vm=result.vm)
    deleted.job.refresh_from_db()
    assert deleted.job.status == "succeeded", deleted.job.error
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10)
    args = parser.parse_args()
    lock = open("/tmp/vmportal-qemu.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    call_command("migrate", verbosity=0)
    host = host_register(actor=None, name="bench", uri=URI, domain_type="qemu")
    src = Path(TMP) / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), "16M"], check=True)
    image = image_register(actor=None, host=host, name="bench-firmware", title="bench", source_path=str(src),
                           is_default=True, replace=True)
    user = get_user_model().objects.create_user("bench", password="x")
    Quota.objects.create(user=user, max_vms=1000, max_vcpus=1000, max_memory_mib=10**6, max_disk_gib=10**5)
    conn = libvirt.open(URI)
    raw, portal = [], []
    try:
        raw_cycle(conn, image.path)  # warm-up both paths
        portal_cycle(user, -1)
        for i in range(args.n):
            raw.append(raw_cycle(conn, image.path))
            portal.append(portal_cycle(user, i))
    finally:
        services_image = Image.objects.get(pk=image.pk)
        conn.storagePoolLookupByName(settings.STORAGE_POOL).storageVolLookupByName(
            services_image.volume_name).delete(0)
        conn.close()
    r_med, p_med = statistics.median(raw), statistics.median(portal)
    ratio = p_med / r_med
    lines = [
        f"Create + start + delete of one firmware-only VM (64 MiB, qcow2 overlay), N={args.n}, "
        f"interleaved, on `{URI}` (plain QEMU), {time.strftime('%Y-%m-%d')}.",
        "",
        "| path | median s / VM | mean s / VM | min | max |",
        "|---|---|---|---|---|",
        f"| raw libvirt-python | {r_med:.3f} | {statistics.mean(raw):.3f} | {min(raw):.3f} | {max(raw):.3f} |",
        f"| portal services (validation, quota lock, rows, job, audit) | {p_med:.3f} | "
        f"{statistics.mean(portal):.3f} | {min(portal):.3f} | {max(portal):.3f} |",
        "",
        f"**Ratio portal / raw (median): {ratio:.3f}×** (target ≤ 1.15×). Most of each cycle is QEMU "
        "start-up and this machine's slow reaping of the stopped QEMU process (see libvirt-facts).",
    ]
    write_section("lifecycle", "VM lifecycle: services vs raw libvirt", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
