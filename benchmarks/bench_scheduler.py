"""The scheduler at scale: placing one VM among 1,000 synthetic hosts carrying 20,000 VMs, and a balancing
pass over those hosts, through cluster.scheduler (the real engine and database; no hypervisor is called:
hosts are rows with facts set here). The old first-fit pick_host runs side by side. Results go to
docs/benchmarks.md.

    .venv/bin/python benchmarks/bench_scheduler.py [--hosts 1000] [--vms 20000] [--runs 50]

Runs on SQLite by default (a fresh database in a temporary directory); with PORTAL_DATABASE_URL set to a
PostgreSQL URL it uses that database (it must be empty: the script migrates it).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
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
    "PORTAL_LOG_LEVEL": "WARNING",
})

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from benchmarks.report import write_section  # noqa: E402
from cluster.models import Cluster, Host  # noqa: E402
from cluster.placement import HostLoad, host_loads  # noqa: E402
from cluster.scheduler import VMRequest, propose_balancing, schedule  # noqa: E402
from vms.models import VM  # noqa: E402


def pick_host(*, vcpus: int, memory_mib: int) -> Host:
    """The placement before the Scheduler API (first fit by free memory over ORM objects), for comparison."""
    hosts = Host.objects.filter(enabled=True).exclude(status__in=["down", "maintenance"])
    loads = host_loads()
    candidates = []
    for host in hosts:
        load = loads.get(host.pk, HostLoad())
        candidates.append(((host.memory_mib or 0) - load.memory_mib, -load.vms, -host.pk, host))
    candidates.sort(key=lambda c: c[:3], reverse=True)
    return candidates[0][3]


def timed(fn, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def row(label: str, times: list[float], target: str = "") -> str:
    p95 = sorted(times)[max(0, int(len(times) * 0.95) - 1)]
    return (f"| {label} | {statistics.median(times):.1f} | {p95:.1f} | {min(times):.1f} | {max(times):.1f} | "
            f"{target} |")


def populate(n_hosts: int, n_vms: int, policy: str) -> Cluster:
    rnd = random.Random(12)
    cluster = Cluster.objects.create(name="bench", policy=policy)
    Host.objects.bulk_create([
        Host(name=f"h{i:04}", uri=f"test:///bench/{i}", status="up" if i % 50 else "maintenance",
             enabled=True, cpus=rnd.choice([16, 32, 64]), memory_mib=rnd.choice([65536, 131072, 262144]),
             free_memory_mib=0, tags=["ssd"] if i % 3 == 0 else [], cluster=cluster)
        for i in range(n_hosts)], batch_size=500)
    hosts = list(Host.objects.filter(cluster=cluster).values_list("pk", "memory_mib"))
    owner = get_user_model().objects.create_user("bench-owner", password="x")
    vms = []
    for i in range(n_vms):
        pk, memory = hosts[i % len(hosts)] if i % 7 else rnd.choice(hosts)
        vms.append(VM(name=f"vm{i:05}", owner=owner, host_id=pk, vcpus=rnd.choice([1, 2, 4]),
                      memory_mib=rnd.choice([1024, 2048, 4096, 8192]), disk_gib=10, status="running"))
    VM.objects.bulk_create(vms, batch_size=1000)
    # A few hot hosts for the balancer: 95% of memory committed.
    for pk, memory in hosts[:20]:
        VM.objects.create(name=f"hot{pk}", owner=owner, host_id=pk, vcpus=2, memory_mib=int(memory * 0.9),
                          disk_gib=10, status="running")
    return cluster


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--vms", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    cluster = populate(args.hosts, args.vms, "evenly_distributed")
    request = VMRequest(vcpus=2, memory_mib=4096, name="bench", required_tags=frozenset({"ssd"}))
    schedule(request=request, cluster=cluster)  # warm-up: the registry, the query plans

    def locked() -> None:
        with transaction.atomic():
            schedule(request=request, cluster=cluster, lock=True)

    results = {
        "place": timed(lambda: schedule(request=request, cluster=cluster), args.runs),
        "place_locked": timed(locked, args.runs),
        "place_any_cluster": timed(lambda: schedule(request=request), args.runs),
        "pick_host": timed(lambda: pick_host(vcpus=2, memory_mib=4096), args.runs),
    }
    balance: dict[str, list[float]] = {}
    moves: dict[str, int] = {}
    for policy in ("evenly_distributed", "power_saving", "vm_count"):
        Cluster.objects.filter(pk=cluster.pk).update(policy=policy, policy_properties={"max_concurrent_migrations": 5})
        cluster.refresh_from_db()
        moves[policy] = len(propose_balancing(cluster=cluster))
        balance[policy] = timed(lambda: propose_balancing(cluster=cluster), max(5, args.runs // 5))

    placed = schedule(request=request, cluster=cluster)
    header = "| what | median ms | p95 ms | min ms | max ms | target |\n|---|---|---|---|---|---|"
    lines = [header,
             row("schedule(): one VM, evenly distributed", results["place"], "< 20 ms"),
             row("schedule(lock=True) in a transaction", results["place_locked"], "< 20 ms"),
             row("schedule() over every cluster", results["place_any_cluster"], ""),
             row("old pick_host (first fit by free memory, ORM objects)", results["pick_host"], "")]
    lines += [row(f"propose_balancing(): {p} ({moves[p]} moves)", balance[p], "") for p in balance]
    body = (f"{args.hosts} synthetic hosts (one in 50 in maintenance, a third tagged `ssd`) carrying {args.vms} "
            f"running VMs, {connection.vendor}; the request asks 2 vCPU, 4096 MiB and the tag `ssd` "
            f"({args.runs} runs each; a balancing pass with max_concurrent_migrations 5 and 20 hot hosts).\n\n"
            + "\n".join(lines)
            + f"\n\nThe explanation of one placement is {len(str(placed.explanation))} characters "
              f"(capped: at most 20 hosts named per filter and in the weights).")
    print(body)
    write_section("scheduler", "Scheduler: placement and balancing at 1,000 hosts", body)


if __name__ == "__main__":
    main()
