"""Live migration: the portal (vm_migrate + the vm.migrate job, in-process) vs raw migrateToURI3.

Both sides move a firmware-only guest (64 MiB, a qcow2 overlay on a host-local pool) between the two
namespace hosts of the test harness (scripts/nshost.sh, vmp-hosta 10.99.7.1 and vmp-hostb 10.99.7.2),
peer to peer with copy-storage, both directions, interleaved in one run. The raw side does the same
hypervisor work as the portal's job: a blank volume pre-created on the destination, the migratable
XML with the disk's destination path, migrateToURI3 (LIVE|PEER2PEER|PERSIST_DEST|UNDEFINE_SOURCE|
NON_SHARED_DISK), then the source's volume deleted. Results go to docs/benchmarks.md.

    .venv/bin/python benchmarks/bench_migration.py [--n 4]
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
from django.test import override_settings  # noqa: E402

from benchmarks.report import write_section  # noqa: E402
from cluster.models import Cluster, Host  # noqa: E402
from cluster.services import host_register  # noqa: E402
from portal.hypervisor import DiskSpec, DomainSpec  # noqa: E402
from portal.hypervisor.domain_xml import build_domain_xml, retarget_paths, volume_xml  # noqa: E402
from portal.models import Job  # noqa: E402
from quotas.models import Quota  # noqa: E402
from storage.services import image_register, pool_ensure  # noqa: E402
from tests.nshost import ns_down, ns_up  # noqa: E402
from vms import services  # noqa: E402
from vms.migration import vm_migrate  # noqa: E402
from vms.models import VM  # noqa: E402

HOSTS = (("vmp-hosta", "10.99.7.1/24"), ("vmp-hostb", "10.99.7.2/24"))
FLAGS = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
         | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE | libvirt.VIR_MIGRATE_NON_SHARED_DISK)


def raw_migrate(conns: dict, src: str, dst: str, tcp: dict, u: str, vol_name: str) -> tuple[float, int | None]:
    """The same libvirt work as the portal's job, with nothing around it."""
    t0 = time.perf_counter()
    sconn, dconn = conns[src], conns[dst]
    spool = sconn.storagePoolLookupByName(settings.STORAGE_POOL)
    dpool = dconn.storagePoolLookupByName(settings.STORAGE_POOL)
    svol = spool.storageVolLookupByName(vol_name)
    dvol = dpool.createXML(volume_xml(name=vol_name, capacity_bytes=svol.info()[1]), 0)
    dom = sconn.lookupByUUIDString(u)
    paths = {svol.path(): dvol.path()}
    flags = libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_SECURE
    params = {libvirt.VIR_MIGRATE_PARAM_DEST_XML: retarget_paths(dom.XMLDesc(flags), paths),
              libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: retarget_paths(
                  dom.XMLDesc(flags | libvirt.VIR_DOMAIN_XML_INACTIVE), paths),
              libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: ["vda"]}
    dom.migrateToURI3(tcp[dst], params, FLAGS)
    svol.delete(0)
    wall = time.perf_counter() - t0
    stats = dconn.lookupByUUIDString(u).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    return wall, stats.get("downtime")


def portal_migrate(vm: VM, dest: Host) -> tuple[float, int | None]:
    t0 = time.perf_counter()
    result = vm_migrate(actor=None, via="cli", vm=vm, host=dest, reason="benchmark")
    wall = time.perf_counter() - t0
    job = Job.objects.get(pk=result.job.pk)
    assert job.status == "succeeded", (job.error, job.error_detail)
    return wall, job.result.get("downtime_ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=4, help="round trips (each: a->b and b->a) per side")
    args = parser.parse_args()
    lock = open("/tmp/vmportal-qemu.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    hvs = [ns_up(name, addr=addr) for name, addr in HOSTS]
    for hv in hvs:
        hv.clear()
    call_command("migrate", verbosity=0)
    cluster = Cluster.objects.create(name="bench")
    hosts = []
    for hv in hvs:
        with override_settings(STORAGE_DIR=str(hv.pool_dir)):
            host = host_register(actor=None, name=hv.name, uri=hv.uri, domain_type="qemu")
            pool_ensure(host=host, path=str(hv.pool_dir))
        Host.objects.filter(pk=host.pk).update(migration_uri=hv.tcp_uri, cluster=cluster)
        hosts.append(Host.objects.get(pk=host.pk))
    a, b = hosts
    src = Path(TMP) / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), "16M"], check=True)
    image = image_register(actor=None, host=a, name="bench-firmware", title="bench", source_path=str(src),
                           is_default=True, replace=True)
    user = get_user_model().objects.create_user("bench", password="x")
    Quota.objects.create(user=user, max_vms=10, max_vcpus=10, max_memory_mib=10**5, max_disk_gib=100)
    Host.objects.filter(pk=b.pk).update(enabled=False)
    created = services.vm_create(actor=user, via="cli", name="bench-mig", vcpus=1, memory_mib=64, disk_gib=1)
    Host.objects.filter(pk=b.pk).update(enabled=True)
    vm = VM.objects.get(pk=created.vm.pk)
    assert vm.status == "running" and vm.host_id == a.pk, vm.last_error

    conns = {hv.name: libvirt.open(hv.uri) for hv in hvs}
    tcp = {hv.name: hv.tcp_uri for hv in hvs}
    u = str(uuid.uuid4())
    name = f"vmpbench-raw-{u[:8]}"
    pool = conns[a.name].storagePoolLookupByName(settings.STORAGE_POOL)
    vol = pool.createXML(volume_xml(name=f"{name}-disk0.qcow2", capacity_bytes=1024**3, backing_path=image.path), 0)
    spec = DomainSpec(name=name, uuid=u, vcpus=1, memory_mib=64, domain_type="qemu", disks=(DiskSpec(path=vol.path()),))
    conns[a.name].defineXML(build_domain_xml(spec)).create()
    raw: list[float] = []
    portal: list[float] = []
    raw_down: list[int] = []
    portal_down: list[int] = []
    try:
        where_raw, where_vm = a.name, a
        for _ in range(args.n):
            for _leg in range(2):
                dst = b.name if where_raw == a.name else a.name
                wall, down = raw_migrate(conns, where_raw, dst, tcp, u, f"{name}-disk0.qcow2")
                raw.append(wall)
                raw_down.append(int(down or 0))
                where_raw = dst
                dest = b if where_vm.pk == a.pk else a
                wall, down = portal_migrate(vm, dest)
                portal.append(wall)
                portal_down.append(int(down or 0))
                where_vm = dest
                vm.refresh_from_db()
    finally:
        for hv in hvs:
            hv.clear()
        for conn in conns.values():
            conn.close()
        ns_down(hvs[0].name)
        ns_down(hvs[1].name)
    r_med, p_med = statistics.median(raw), statistics.median(portal)
    ratio = p_med / r_med
    lines = [
        f"Live migration of one firmware-only guest (64 MiB, 1 GiB qcow2 overlay on a host-local pool, "
        f"copy-storage) between the two namespace hosts, peer to peer over TCP, {args.n} round trips per side "
        f"(a→b and b→a), interleaved, {time.strftime('%Y-%m-%d')}.",
        "",
        "| path | median wall s | mean wall s | min | max | median downtime ms |",
        "|---|---|---|---|---|---|",
        f"| raw migrateToURI3 (+ destination volume, source volume deleted) | {r_med:.3f} | "
        f"{statistics.mean(raw):.3f} | {min(raw):.3f} | {max(raw):.3f} | {statistics.median(raw_down):.0f} |",
        f"| portal vm_migrate + vm.migrate job (record phase, rows, audit, progress) | {p_med:.3f} | "
        f"{statistics.mean(portal):.3f} | {min(portal):.3f} | {max(portal):.3f} | "
        f"{statistics.median(portal_down):.0f} |",
        "",
        f"**Ratio portal / raw (median wall time): {ratio:.3f}×** (target ≤ 1.2×, same downtime). Most of each "
        "migration is QEMU's own transfer and the source's reaping of the old QEMU process (see libvirt-facts §2.3).",
    ]
    write_section("migration", "Live migration: portal vs raw migrateToURI3", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
