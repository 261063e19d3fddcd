"""Jobs per host are bounded (issue #12): at most `Host.max_jobs` jobs talk to one host at once.

A VM job's host is the VM's host; a live migration (`vm.migrate`) counts on its destination too. When a
worker picks up a job whose host already runs max_jobs jobs, the job is not started: it stays pending,
its step says what it waits for (portal.jobs' claim gate, run inside the claim's transaction with a row
lock on the host, so two workers claiming at once never both take the last place). When a job on that
host finishes, the waiting jobs of the host are offered to the workers again (`wake_waiting`, under the
same row lock, so a job held back meanwhile is seen). Jobs on another host are never held up.

Not bounded: HA restarts (their recorded host is dead; they act elsewhere), jobs on a host that does not
answer (the unreachable-host guard fails them at once), and jobs that are not about a VM (maintenance,
which waits for the migrations it starts).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from cluster.choices import HostStatus
from cluster.models import Host
from portal.choices import JobStatus
from portal.jobs import BATCH_WAIT_STEP, WAITING_PREFIX, enqueue
from portal.models import Job

from .models import VM

UNBOUNDED_KINDS = frozenset({"vm.ha_restart"})
MIGRATE_JOB = "vm.migrate"


def _bounded(kind: str, target_type: str) -> bool:
    return target_type == "vm" and kind.startswith("vm.") and kind not in UNBOUNDED_KINDS


def _hosts_of(rows: list[tuple[Any, str, dict]]) -> dict[int, set[int]]:
    """{job row index: host ids} for (target_id, kind, params) rows of bounded VM jobs (one VM query)."""
    vm_ids = {int(t) for t, _k, _p in rows if str(t).isdigit()}
    vm_host = dict(VM.objects.filter(pk__in=vm_ids).values_list("pk", "host_id")) if vm_ids else {}
    out: dict[int, set[int]] = {}
    for i, (target_id, kind, params) in enumerate(rows):
        hosts = set()
        if str(target_id).isdigit() and int(target_id) in vm_host:
            hosts.add(vm_host[int(target_id)])
        dest = (params or {}).get("target_host_id") if kind == MIGRATE_JOB else None
        if isinstance(dest, int):
            hosts.add(dest)
        out[i] = hosts
    return out


def job_hosts(job: Job) -> set[int]:
    """The hosts a job talks to (empty: not bounded)."""
    if not _bounded(job.kind, job.target_type):
        return set()
    return _hosts_of([(job.target_id, job.kind, job.params)])[0]


def running_jobs_per_host() -> dict[int, int]:
    """Running bounded jobs per host id (two queries: the running VM jobs, their VMs' hosts)."""
    rows = [(t, k, p) for t, k, p in Job.objects.filter(status=JobStatus.RUNNING, target_type="vm",
                                                         kind__startswith="vm.")
            .exclude(kind__in=UNBOUNDED_KINDS).values_list("target_id", "kind", "params")]
    counts: dict[int, int] = {}
    for hosts in _hosts_of(rows).values():
        for host_id in hosts:
            counts[host_id] = counts.get(host_id, 0) + 1
    return counts


def host_job_gate(job: Job) -> str | None:
    """portal.jobs claim gate: why `job` must wait for its host (None: it may start). Runs inside the
    claim's transaction; the hosts' rows stay locked until the claim commits."""
    hosts = job_hosts(job)
    if not hosts:
        return None
    rows = list(Host.objects.select_for_update().filter(pk__in=hosts).order_by("pk")
                .values_list("pk", "name", "max_jobs", "status"))
    running = running_jobs_per_host()
    for _pk, name, max_jobs, status in rows:
        if status not in HostStatus.REACHABLE or not max_jobs:
            continue  # an unreachable host's jobs fail at once (the guard); 0: no bound
        n = running.get(_pk, 0)
        if n >= max_jobs:
            return (f"host {name} is running {n} job{'s' if n != 1 else ''} "
                    f"(at most {max_jobs} at once); this one starts when one of them finishes")
    return None


def wake_waiting(sender: Any = None, *, job: Job, **kwargs: Any) -> None:
    """portal.jobs.job_finished receiver: offer the jobs waiting for the finished job's hosts to the
    workers again, oldest first (those that still do not fit are held back again)."""
    hosts = job_hosts(job)
    if not hosts:
        return
    with transaction.atomic():
        # Claims under way on these hosts hold their rows: their held-back jobs are committed before we look.
        list(Host.objects.select_for_update().filter(pk__in=hosts).order_by("pk").values_list("pk", flat=True))
        # Not those a batch holds back (portal.jobs' batch gate): their batch wakes them as its jobs finish.
        waiting = list(Job.objects.filter(status=JobStatus.PENDING, step__startswith=WAITING_PREFIX, target_type="vm")
                       .exclude(step__startswith=BATCH_WAIT_STEP)
                       .order_by("created_at").values_list("pk", "target_id", "kind", "params"))
    if not waiting:
        return
    hosts_of = _hosts_of([(t, k, p) for _pk, t, k, p in waiting])
    for i, (pk, *_rest) in enumerate(waiting):
        if hosts_of[i] & hosts:
            enqueue(pk)
