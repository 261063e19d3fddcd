"""What the monitoring collector costs a host per interval with 100 running domains (issue #14 part 2):
libvirt calls and milliseconds for the gateway's one bulk listing with the counters
(`list_domain_states(stats=True)`, one getAllDomainStats) plus the database writes (`samples_record`:
bulk inserts and one upsert), against a naive per-domain loop in the same run (lookup, info, block and
interface stats per domain through raw libvirt-python, and one INSERT per sample). Results go to
docs/benchmarks.md.

    .venv/bin/python benchmarks/bench_collector.py [--domains 100] [--intervals 20]

On libvirt's test driver (test:///default: 100 running domains cost nothing; it is in-process, so a
"call" there is a libvirt API call, which over qemu:///system or a remote host is one RPC each). Runs on
SQLite by default (a fresh database in a temporary directory); with PORTAL_DATABASE_URL set to a
PostgreSQL URL it uses that database (it must be empty: the script migrates it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TMP = tempfile.mkdtemp(prefix="vmportal-bench-")
os.environ.update({
    "DJANGO_SETTINGS_MODULE": "portal.settings.base",
    "PORTAL_DEBUG": "1",
    "PORTAL_DATA_DIR": TMP,
    "PORTAL_TASKS_BACKEND": "django.tasks.backends.immediate.ImmediateBackend",
    "PORTAL_INSTANCE_ID": f"bench-{uuid.uuid4().hex[:6]}",
    "PORTAL_LOG_LEVEL": "WARNING",
})

import django  # noqa: E402

django.setup()

import libvirt  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from benchmarks.report import write_section  # noqa: E402
from cluster.models import Host  # noqa: E402
from monitoring.collector import Reading, memory_used_bytes, rates_between, samples_record  # noqa: E402
from monitoring.models import VMSample  # noqa: E402
from portal.hypervisor import DomainStats, get_driver  # noqa: E402
from vms.choices import VMStatus  # noqa: E402
from vms.models import VM  # noqa: E402

URI = "test:///default"
DOMAIN_XML = """<domain type='test'><name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type>hvm</type></os><devices><disk type='file' device='disk'><source file='/guest/{name}.img'/>
<target dev='vda' bus='virtio'/></disk><interface type='network'><source network='default'/>
<target dev='{nic}'/></interface></devices></domain>"""


def setup(conn: libvirt.virConnect, n: int) -> tuple[Host, list[str]]:
    """n running domains on the test driver (its state lives while a connection to it is open: `conn`)."""
    call_command("migrate", verbosity=0, interactive=False)
    owner = get_user_model().objects.create_user("bench", password="x")
    host = Host.objects.create(name="bench-host", uri=URI, status="up", cpus=16, memory_mib=65536,
                               free_memory_mib=32768)
    uuids = []
    for i in range(n):
        uid = str(uuid.uuid4())
        dom = conn.defineXML(DOMAIN_XML.format(name=f"bench-{i:03}-{uid[:6]}", uuid=uid, nic=f"vnb{i}"))
        dom.create()
        uuids.append(uid)
    VM.objects.bulk_create([VM(uuid=uid, owner=owner, host=host, name=f"bench-{i:03}", vcpus=1, memory_mib=64,
                               disk_gib=1, status=VMStatus.RUNNING) for i, uid in enumerate(uuids)])
    return host, uuids


def collector_interval(host: Host, now) -> dict[str, float]:
    """One interval the portal's way: the bulk listing with counters, then the bulk writes."""
    driver = get_driver(URI)
    t0 = time.perf_counter()
    with driver.counting_calls() as calls:
        domains = driver.list_domain_states(stats=True)
    t1 = time.perf_counter()
    with CaptureQueriesContext(connection) as queries:
        samples_record(host=host, domains=domains, now=now)
    t2 = time.perf_counter()
    return {"calls": calls.total, "gateway_ms": (t1 - t0) * 1000, "db_ms": (t2 - t1) * 1000,
            "queries": len(queries.captured_queries)}


def naive_interval(host: Host, conn: libvirt.virConnect, uuids: list[str], last: dict[str, Reading], now,
                   vms: dict[str, VM]) -> dict[str, float]:
    """One interval the naive way: per domain a lookup, info, block and interface stats (4 calls), and
    one INSERT per sample (the same rate maths)."""
    calls = 0
    t0 = time.perf_counter()
    readings = {}
    for uid in uuids:
        dom = conn.lookupByUUIDString(uid)
        info = dom.info()
        block = dom.blockStats("vda")
        nic = dom.interfaceStats(f"vnb{uuids.index(uid)}")
        calls += 4
        readings[uid] = (DomainStats(domain_id=dom.ID(), cpu_time_ns=info[4], vcpus=info[3], rd_bytes=block[1],
                                     wr_bytes=block[3], rx_bytes=nic[0], tx_bytes=nic[4]))
    t1 = time.perf_counter()
    with CaptureQueriesContext(connection) as queries:
        for uid, stats in readings.items():
            cur = Reading.of(now, stats)
            rates = rates_between(last.get(uid), cur, vcpus=stats.vcpus, max_gap=600)
            last[uid] = cur
            if rates is None:
                continue
            vm = vms[uid]
            VMSample.objects.create(vm=vm, host=host, at=now, seconds=rates.seconds, cpu_pct=rates.cpu_pct,
                                    vcpus=stats.vcpus, memory_mib=vm.memory_mib, disk_gib=vm.disk_gib,
                                    mem_used_bytes=memory_used_bytes(stats), disk_read_bps=rates.disk_read_bps,
                                    disk_write_bps=rates.disk_write_bps, net_rx_bps=rates.net_rx_bps,
                                    net_tx_bps=rates.net_tx_bps)
    t2 = time.perf_counter()
    return {"calls": calls, "gateway_ms": (t1 - t0) * 1000, "db_ms": (t2 - t1) * 1000,
            "queries": len(queries.captured_queries)}


def summary(label: str, runs: list[dict[str, float]]) -> str:
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    total = [r["gateway_ms"] + r["db_ms"] for r in runs]
    return (f"| {label} | {med['calls']:.0f} | {med['gateway_ms']:.1f} | {med['queries']:.0f} | {med['db_ms']:.1f} | "
            f"{statistics.median(total):.1f} | {max(total):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--domains", type=int, default=100)
    parser.add_argument("--intervals", type=int, default=20)
    args = parser.parse_args()
    conn = libvirt.open(URI)
    host, uuids = setup(conn, args.domains)
    vms = {str(vm.uuid): vm for vm in VM.objects.all()}
    start = timezone.now() - timedelta(days=1)
    portal, naive = [], []
    last: dict[str, Reading] = {}
    collector_interval(host, start)  # the first readings (no rates yet), each way
    naive_interval(host, conn, uuids, last, start + timedelta(seconds=1), vms)
    for i in range(1, args.intervals + 1):
        portal.append(collector_interval(host, start + timedelta(seconds=30 * i)))
        naive.append(naive_interval(host, conn, uuids, last, start + timedelta(seconds=30 * i + 1), vms))
    conn.close()
    samples = VMSample.objects.count()
    assert samples == 2 * args.domains * args.intervals, samples

    db = connection.vendor
    body = "\n".join([
        f"`benchmarks/bench_collector.py`: one host on libvirt's test driver with {args.domains} running domains "
        f"(each with a disk and a NIC, each a VM of the portal), {args.intervals} intervals each way in the same "
        f"run, database {db}. Medians per interval; a libvirt call is one RPC over qemu:///system or a remote "
        "host (the test driver runs in-process, so its milliseconds are the floor, not a remote host's).",
        "",
        "| per host and interval | libvirt calls | libvirt ms | queries | DB ms | total ms | worst total ms |",
        "|---|---|---|---|---|---|---|",
        summary("portal collector: one getAllDomainStats + bulk writes", portal),
        summary("naive: lookup + info + blockStats + interfaceStats per domain, one INSERT per sample", naive),
        "",
        "The collector's libvirt side is the monitor's reconcile call itself (`list_domain_states(stats=True)` "
        "asks the same single getAllDomainStats for more stat groups when a sample is due), so sampling adds no "
        "call to a host; its writes are a constant number of queries (previous readings, the VMs, one bulk "
        "INSERT of the samples, one host sample, one upsert of the readings) whatever the number of domains. "
        "DB ms is the whole of `samples_record`: the rate maths, the rows, the queries and handing the live "
        "events to the channel layer (in-memory here); the queries themselves take about half of it. "
        f"The naive loop makes {4 * args.domains} calls and {args.domains} INSERTs per interval: over a remote "
        "host each call is a round trip (about 0.2-1 ms on a LAN), so it grows with the VMs where the "
        "collector does not.",
    ])
    write_section("collector", f"Monitoring collector: {args.domains} domains per host, bulk vs per domain", body)
    print(body)


if __name__ == "__main__":
    main()
