"""What a cluster does with its VMs: maintenance (empty a host), HA restarts, balancing and power saving.

cluster knows hosts, not VMs; this module is the VM side of its operations, registered in
VmsConfig.ready: the evacuator and the balancer with `cluster.maintenance.register_operation`, the
periodic passes with `cluster.housekeeping.register_housekeeping` (the monitor's reconcile turn), and
the immediate HA pass on `cluster.signals.host_down_confirmed`.

Each operation is split in two: a *plan* (plain data from the database: which VM, why, what to do)
that tests check on synthetic clusters, and the *act* that carries it out through the services
(vm_migrate, the HA restart job, the power agent).

Live migration itself is vms.migration.vm_migrate (its own module): imported inside the functions
that use it, so this module does not depend on it at import time.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from cluster.choices import HostStatus
from cluster.maintenance import host_maintenance_reached
from cluster.models import Cluster, Host
from cluster.placement import HostLoad, host_loads
from cluster.power import (
    OFF,
    ON,
    cluster_capacity_short,
    host_answers,
    host_power_off,
    host_power_on,
    power_agent_configured,
)
from cluster.scheduler import Move, VMRequest, propose_balancing, schedule
from networks.models import Network
from networks.services import network_ensure_on_host
from portal.actors import Actor
from portal.audit import audit
from portal.choices import JobStatus, Via
from portal.exceptions import Conflict, NotFound, PortalError
from portal.hypervisor import get_driver
from portal.jobs import JobContext, job_create, job_handler, run_job
from portal.models import AuditEvent, Job
from storage.models import StoragePool, Volume
from storage.pools import pool_ensure

from . import migration, scheduling
from .choices import VMStatus
from .lifecycle import status_for
from .models import VM
from .services import vm_force_off, vm_set_status, vm_stop
from .specs import build_spec

log = logging.getLogger(__name__)

MAINTENANCE_JOB = "host.maintenance"
HA_JOB = "vm.ha_restart"
MIGRATE_JOB = "vm.migrate"
JOB_LABELS = {MAINTENANCE_JOB: "Maintenance (move VMs away)", HA_JOB: "HA restart on another host"}

# States in which a VM was running (or about to) when its host died: an HA VM in one of them restarts.
_WAS_RUNNING = (VMStatus.RUNNING, VMStatus.PAUSED, VMStatus.STARTING, VMStatus.REBOOTING, VMStatus.MIGRATING)
# A VM in one of these still occupies its host (maintenance waits, power saving keeps the host up).
_ON_HOST = (*VMStatus.ACTIVE, *VMStatus.TRANSITIONAL, VMStatus.UNKNOWN)

DEFAULTS: dict[str, int] = {
    "max_concurrent_migrations": 2,
    "balancing_interval_seconds": 60,
    "balancing_cooldown_seconds": 600,
    "min_spare_hosts": 0,
    "low_free_memory_percent": 20,
    "standby_delay_seconds": 300,  # a host is up and empty this long before it goes on standby
    "wake_timeout_seconds": 600,  # a powered-on host has this long to come up before another is woken
    "ha_max_attempts": 5,
    "ha_retry_seconds": 30,  # backoff of HA restarts: 30 s, 60 s, 120 s … (at most 600 s)
}


def policy_value(cluster: Cluster | None, key: str) -> int:
    """An integer policy property of the cluster (Cluster.policy_properties), or its default."""
    default = DEFAULTS[key]
    if cluster is None:
        return default
    try:
        return int((cluster.policy_properties or {}).get(key, default))
    except (TypeError, ValueError):
        return default


def _vm_migrate() -> Callable[..., Any]:
    """vms.migration.vm_migrate (a function, so tests can stand in for the act of migrating)."""
    return migration.vm_migrate


def vm_request(vm: VM) -> VMRequest:
    """What the scheduler places for `vm` when it must leave its host (pinning, tags, affinity)."""
    return scheduling.vm_request(vm, for_migration=True)


def _active_job(vm_id: int) -> Job | None:
    # An external plugin's job never holds the VM (portal.jobs.services): HA and balancing may move it.
    return Job.objects.filter(target_type="vm", target_id=str(vm_id), status__in=JobStatus.ACTIVE,
                              external=False).first()


def _run_unclaimed(jobs: Iterable[Job], grace: float = 5.0) -> None:
    """Child jobs no worker claimed within `grace` seconds run in a thread here (one worker must not wait for
    itself); run_job's atomic claim makes sure each runs once."""
    cutoff = timezone.now() - timedelta(seconds=grace)
    for job in jobs:
        if Job.objects.filter(pk=job.pk, status=JobStatus.PENDING, created_at__lt=cutoff).exists():
            def run(job_id: Any = job.pk) -> None:
                try:
                    run_job(job_id)
                finally:
                    close_old_connections()
            threading.Thread(target=run, name=f"child-job-{job.pk}", daemon=True).start()


def _poll_seconds() -> float:
    return float(getattr(settings, "CLUSTER_OPS_POLL_SECONDS", 1.0))


# --- maintenance --------------------------------------------------------------------------------

@dataclass(frozen=True)
class EvacuationPlan:
    """A host's VMs before maintenance: what migrates, what is busy (waited for), what stays (stopped)."""

    migrate: list[VM]
    busy: list[VM]
    stay: list[VM]


def evacuation_plan(host: Host) -> EvacuationPlan:
    """Running and paused VMs migrate; VMs in a job wait for it; stopped ones stay defined on the host as they are."""
    vms = list(VM.objects.filter(host=host).exclude(status=VMStatus.DELETED).order_by("-ha_priority", "name"))
    return EvacuationPlan(migrate=[v for v in vms if v.status in VMStatus.ACTIVE],
                          busy=[v for v in vms if v.status in VMStatus.TRANSITIONAL],
                          stay=[v for v in vms if v.status not in (*VMStatus.ACTIVE, *VMStatus.TRANSITIONAL)])


def _evacuation_count(plan: EvacuationPlan, *, tried: set[int]) -> int:
    """The VMs an evacuation deals with: those it tried to move (moved, failed or migrating) and those on the
    host, running or in a job, not tried yet. A VM being migrated (tried, and `migrating`: in plan.busy) counts once."""
    return len(tried) + len([v for v in (*plan.migrate, *plan.busy) if v.pk not in tried])


def host_evacuate(*, actor: Actor, via: str, host: Host, stop_unmovable: bool = False) -> Job:
    """Record phase of emptying a host (called by cluster.maintenance.host_maintenance_start, in its transaction)."""
    plan = evacuation_plan(host)
    return job_create(kind=MAINTENANCE_JOB, actor=actor, via=via, target=host, max_attempts=1,
                      params={"stop_unmovable": stop_unmovable, "total": len(plan.migrate) + len(plan.busy),
                              "stays": [v.name for v in plan.stay]})


def _maintenance_failed(job: Job, error: str) -> None:
    host = Host.objects.filter(pk=int(job.target_id)).first()
    if host is not None:
        audit(actor=job.actor, via=job.via, action="host.maintenance", target=host, job=job,
              outcome=AuditEvent.Outcome.FAILED, message=error)


def _wait_job(job: Job, timeout: float) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job.refresh_from_db(fields=["status", "error"])
        if job.status in JobStatus.FINISHED or time.monotonic() > deadline:
            return job
        _run_unclaimed([job])
        time.sleep(_poll_seconds())


def _stop_unmovable(ctx: JobContext, vm: VM) -> str:
    """Shut a VM that could not move down (ACPI, then power cut): what happened, in words."""
    actor = ctx.job.actor
    try:
        result = vm_stop(actor=actor, via=ctx.job.via, vm=vm.pk)
        if result.job is not None:
            _wait_job(result.job, settings.STOP_TIMEOUT_SECONDS + 30)
        vm.refresh_from_db(fields=["status"])
        if vm.status == VMStatus.STOPPED:
            return "shut down"
        result = vm_force_off(actor=actor, via=ctx.job.via, vm=vm.pk)
        if result.job is not None:
            _wait_job(result.job, 60)
        vm.refresh_from_db(fields=["status"])
        return "powered off (it did not shut down)" if vm.status == VMStatus.STOPPED else f"still {vm.status}"
    except PortalError as exc:
        return f"could not be stopped: {exc.message}"


@job_handler(MAINTENANCE_JOB, on_failure=_maintenance_failed)
def maintenance(ctx: JobContext) -> dict:
    """Live-migrate every running VM off the host (at most max_concurrent_migrations at once), stop what cannot
    move when asked, and put the host in maintenance once nothing runs there. The report is the job's result
    (or, when VMs are left, its error and log) and the audit event's data."""
    host = Host.objects.select_related("cluster").get(pk=int(ctx.job.target_id))
    limit = max(1, policy_value(host.cluster, "max_concurrent_migrations"))
    stop_unmovable = bool(ctx.params.get("stop_unmovable"))
    timeout = float(getattr(settings, "MAINTENANCE_TIMEOUT_SECONDS", 3600))
    deadline = time.monotonic() + timeout
    total = int(ctx.params.get("total") or 0)
    moved: list[dict] = []
    failed: dict[int, dict] = {}
    in_flight: dict[int, Job] = {}
    tried: set[int] = set()
    aborted = ""
    while True:
        if not Host.objects.filter(pk=host.pk, status=HostStatus.PREPARING_FOR_MAINTENANCE).exists():
            aborted = f"{host.name} left preparing for maintenance (activated): the remaining VMs stay"
            break
        for vm_id, job in list(in_flight.items()):
            job.refresh_from_db(fields=["status", "error"])
            if job.status not in JobStatus.FINISHED:
                continue
            del in_flight[vm_id]
            vm = VM.objects.select_related("host").get(pk=vm_id)
            if job.status == JobStatus.SUCCEEDED and vm.host_id != host.pk:
                moved.append({"vm": vm.name, "vm_id": vm.pk, "to": vm.host.name})
                ctx.log(f"{vm.name} moved to {vm.host.name}")
            else:
                failed[vm_id] = {"vm": vm.name, "vm_id": vm.pk, "reason": job.error or f"migration {job.status}"}
                ctx.log(f"{vm.name} could not move: {failed[vm_id]['reason']}")
        plan = evacuation_plan(host)
        total = max(total, _evacuation_count(plan, tried=tried))
        waiting = [v for v in plan.migrate if v.pk not in tried]
        for vm in waiting:
            if len(in_flight) >= limit:
                break
            tried.add(vm.pk)
            try:
                result = _vm_migrate()(actor=ctx.job.actor, via=ctx.job.via, vm=vm, host=None,
                                 reason=f"maintenance of {host.name}")
            except PortalError as exc:
                failed[vm.pk] = {"vm": vm.name, "vm_id": vm.pk, "reason": exc.message}
                if isinstance(exc, Conflict):
                    cluster_capacity_short(cluster_id=host.cluster_id, reason=f"maintenance of {host.name}: "
                                                                              f"{vm.name}: {exc.message}")
                ctx.log(f"{vm.name} could not move: {exc.message}")
                continue
            if result.job is not None:
                in_flight[vm.pk] = result.job
        handled = len(moved) + len(failed)
        ctx.progress(int(100 * handled / total) if total else 100,
                     f"{handled} of {total} VM(s) handled, {len(in_flight)} migrating")
        left = [v for v in evacuation_plan(host).migrate if v.pk not in tried]
        busy = evacuation_plan(host).busy
        if not in_flight and not left and not (busy and time.monotonic() < deadline):
            break
        if time.monotonic() > deadline:
            aborted = f"gave up waiting after {timeout:.0f} s"
            break
        _run_unclaimed(in_flight.values())
        time.sleep(_poll_seconds())
    stopped = []
    if stop_unmovable and not aborted:
        for vm in VM.objects.filter(host=host, status__in=VMStatus.ACTIVE):
            what = _stop_unmovable(ctx, vm)
            stopped.append({"vm": vm.name, "vm_id": vm.pk, "outcome": what})
            ctx.log(f"{vm.name}: {what}")
    still = list(VM.objects.filter(host=host, status__in=_ON_HOST).values_list("name", flat=True))
    report = {"host": host.name, "moved": moved, "failed": list(failed.values()), "stopped": stopped,
              "stays_stopped": list(VM.objects.filter(host=host, status=VMStatus.STOPPED)
                                    .values_list("name", flat=True)),
              "still_running": still, "aborted": aborted, "total": total}
    if not still and not aborted:
        report["reached"] = host_maintenance_reached(
            host=host, job=ctx.job, message=f"{host.name} is in maintenance: {len(moved)} VM(s) moved away, "
                                            f"{len(stopped)} stopped")
        audit(actor=ctx.job.actor, via=ctx.job.via, action="host.maintenance.report", target=host, job=ctx.job,
              message=_report_text(report), data=report)
        return report
    report["reached"] = False
    ctx.log(_report_text(report))
    audit(actor=ctx.job.actor, via=ctx.job.via, action="host.maintenance.report", target=host, job=ctx.job,
          outcome=AuditEvent.Outcome.FAILED, message=_report_text(report), data=report)
    raise Conflict(_report_text(report), host=host.name)


def _report_text(report: dict) -> str:
    parts = []
    if report["moved"]:
        parts.append("moved: " + ", ".join(f"{m['vm']} → {m['to']}" for m in report["moved"]))
    if report["failed"]:
        parts.append("could not move: " + "; ".join(f"{f['vm']} ({f['reason']})" for f in report["failed"]))
    if report["stopped"]:
        parts.append("stopped: " + ", ".join(f"{s['vm']} ({s['outcome']})" for s in report["stopped"]))
    if report["stays_stopped"]:
        parts.append("stay defined here, stopped: " + ", ".join(report["stays_stopped"]))
    if report.get("aborted"):
        parts.append(report["aborted"])
    if report["still_running"]:
        parts.append(f"{report['host']} waits in preparing for maintenance while these still run there: "
                     + ", ".join(report["still_running"]) + " (stop or move them, or start maintenance again "
                     "with “stop what cannot move”)")
    return "; ".join(parts) or f"nothing ran on {report['host']}"


def maintenance_pass() -> list[str]:
    """Preparing hosts with no maintenance job under way and nothing left on them enter maintenance (an admin
    stopped the last VMs by hand after a report)."""
    reached = []
    for host in Host.objects.filter(status=HostStatus.PREPARING_FOR_MAINTENANCE):
        if Job.objects.filter(kind=MAINTENANCE_JOB, target_type="host", target_id=str(host.pk),
                              status__in=JobStatus.ACTIVE).exists():
            continue
        if VM.objects.filter(host=host, status__in=_ON_HOST).exists():
            continue
        if host_maintenance_reached(host=host):
            reached.append(host.name)
    return reached


# --- high availability --------------------------------------------------------------------------

@dataclass(frozen=True)
class HADecision:
    """What the HA pass does with one highly available VM of a confirmed-down host."""

    vm: VM
    host: Host  # the dead host
    action: str  # restart | wait | skip (cannot restart elsewhere) | give_up (out of attempts)
    reason: str = ""
    attempt: int = 0


def _was_running(vm: VM) -> bool:
    if vm.status == VMStatus.UNKNOWN:
        return vm.known_status in _WAS_RUNNING
    return vm.status in _WAS_RUNNING


def local_storage(vm: VM) -> list[str]:
    """The VM's disks (and their images) that are on host-local pools: such a VM cannot restart elsewhere."""
    local = []
    for volume in Volume.objects.filter(attachments__vm=vm).select_related("pool", "backing_image__pool"):
        if not volume.pool.shared:
            local.append(f"{volume.name} (pool {volume.pool.name})")
        elif volume.backing_image is not None and not volume.backing_image.pool.shared:
            local.append(f"{volume.name}'s image {volume.backing_image.name} (pool {volume.backing_image.pool.name})")
    return local


def _backoff(cluster: Cluster | None, failures: int) -> timedelta:
    return timedelta(seconds=min(600, policy_value(cluster, "ha_retry_seconds") * 2 ** max(0, failures - 1)))


def ha_plan(*, now: datetime | None = None) -> list[HADecision]:
    """The HA VMs of every confirmed-down host of an HA cluster, highest ha_priority first, with what to do.

    A host merely unreachable (non-responsive, down without confirmation) is never enough: its VMs may still run.
    """
    now = now or timezone.now()
    decisions = []
    hosts = Host.objects.filter(confirmed_down_at__isnull=False, status__in=HostStatus.UNREACHABLE,
                                cluster__ha_enabled=True).select_related("cluster")
    for host in hosts:
        since = host.confirmed_down_at
        for vm in VM.objects.filter(host=host, highly_available=True).exclude(status=VMStatus.DELETED):
            if not _was_running(vm):
                continue  # stopped by its owner before the host died: it stays stopped
            if _active_job(vm.pk) is not None:
                decisions.append(HADecision(vm, host, "wait", "a job is under way on it"))
                continue
            jobs = Job.objects.filter(kind=HA_JOB, target_type="vm", target_id=str(vm.pk), created_at__gte=since)
            failures = jobs.filter(status__in=(JobStatus.FAILED, JobStatus.ERRORED)).count()
            limit = policy_value(host.cluster, "ha_max_attempts")
            if failures >= limit:
                decisions.append(HADecision(vm, host, "give_up", f"{failures} restart attempts failed", failures))
                continue
            last = jobs.filter(status__in=(JobStatus.FAILED, JobStatus.ERRORED)).order_by("-finished_at").first()
            if last is not None and last.finished_at and now < last.finished_at + _backoff(host.cluster, failures):
                decisions.append(HADecision(vm, host, "wait", f"next attempt after "
                                            f"{last.finished_at + _backoff(host.cluster, failures):%H:%M:%S}",
                                            failures))
                continue
            local = local_storage(vm)
            if local:
                decisions.append(HADecision(vm, host, "skip", "disks are on host-local storage: " + ", ".join(local)))
                continue
            decisions.append(HADecision(vm, host, "restart", f"{host.name} is confirmed down", failures + 1))
    decisions.sort(key=lambda d: (-d.vm.ha_priority, d.vm.name, d.vm.pk))
    return decisions


def _audit_once(vm: VM, since: datetime | None, message: str) -> None:
    """A refusal the HA pass meets on every turn is audited once per host failure."""
    if not AuditEvent.objects.filter(action=HA_JOB, target_type="vm", target_id=str(vm.pk),
                                     outcome=AuditEvent.Outcome.DENIED, message=message,
                                     **({"at__gte": since} if since else {})).exists():
        audit(actor=None, via=Via.SYSTEM, action=HA_JOB, target=vm, outcome=AuditEvent.Outcome.DENIED,
              message=message)


def vm_ha_restart(*, vm: VM, source: Host, attempt: int = 1) -> Job | None:
    """Record phase of restarting an HA VM of a confirmed-down host elsewhere (the `vm.ha_restart` job).

    None when another pass got there first: one restart job per VM at a time, under the VM's row lock.
    """
    with transaction.atomic():
        vm = VM.objects.select_for_update().get(pk=vm.pk)
        if vm.host_id != source.pk or not _was_running(vm) or _active_job(vm.pk) is not None:
            return None
        job = job_create(kind=HA_JOB, actor=None, via=Via.SYSTEM, target=vm, max_attempts=1,
                         params={"source_host_id": source.pk, "previous": vm.status,
                                 "known_status": vm.known_status, "attempt": attempt})
        vm_set_status(vm, VMStatus.STARTING)
        audit(actor=None, via=Via.SYSTEM, action=HA_JOB, target=vm, job=job, outcome=AuditEvent.Outcome.REQUESTED,
              message=f"Restarting {vm.name} on another host: {source.name} is confirmed down (attempt {attempt})")
    return job


def _ha_failed(job: Job, error: str) -> None:
    """The VM stays on its dead host as it was shown; the next HA pass tries again after the backoff."""
    vm = VM.objects.get(pk=int(job.target_id))
    if vm.host_id == job.params.get("source_host_id"):
        vm_set_status(vm, job.params.get("previous") or VMStatus.UNKNOWN,
                      last_error=f"HA restart failed (attempt {job.params.get('attempt', 1)}): {error}",
                      known_status=job.params.get("known_status", ""))
    audit(actor=None, via=Via.SYSTEM, action=HA_JOB, target=vm, job=job, outcome=AuditEvent.Outcome.FAILED,
          message=f"HA restart of {vm.name} failed: {error}")


def _target_pools(vm: VM, target: Host) -> dict[int, StoragePool]:
    """For each of the VM's volumes, the pool of the same name and path on `target` (made there if missing)."""
    pools: dict[int, StoragePool] = {}
    for volume in Volume.objects.filter(attachments__vm=vm).select_related("pool"):
        source = volume.pool
        pool = StoragePool.objects.filter(host=target, name=source.name).first()
        if pool is None:
            pool = pool_ensure(host=target, name=source.name, path=source.path)
            StoragePool.objects.filter(pk=pool.pk).update(shared=True)  # the same shared storage, seen from there
        elif pool.path != source.path:
            raise Conflict(f"Pool {source.name} of {target.name} is at {pool.path}, not {source.path}: it is not the "
                           f"same shared storage, so {vm.name} cannot restart there.")
        pools[volume.pk] = pool
    return pools


def _ensure_networks(vm: VM, host: Host) -> None:
    for network in Network.objects.filter(nics__vm=vm).distinct().prefetch_related("reservations"):
        network_ensure_on_host(network=network, host=host)


@job_handler(HA_JOB, on_failure=_ha_failed)
def ha_restart(ctx: JobContext) -> dict:
    """Define and start the VM on another host of its cluster, once: the dead host must still be confirmed down
    and silent, and no reachable host may already run the VM (then the record just follows it there)."""
    vm = VM.objects.select_related("host__cluster", "owner", "image").get(pk=int(ctx.job.target_id))
    source = Host.objects.select_related("cluster").get(pk=ctx.params["source_host_id"])
    uuid = str(vm.uuid)
    if vm.host_id != source.pk:
        return {"already_moved": True, "to": vm.host.name}
    ctx.progress(10, f"Checking that {source.name} is down")
    if source.confirmed_down_at is None:
        raise Conflict(f"{source.name} is no longer confirmed down: {vm.name} is not restarted elsewhere.")
    if host_answers(source):
        raise Conflict(f"{source.name} answers libvirt again: {vm.name} may still run there, so it is not "
                       "restarted elsewhere.")
    ctx.progress(20, "Looking for the VM on the cluster's other hosts")
    running_on, info, leftovers = None, None, []
    others = Host.objects.filter(cluster=source.cluster).exclude(pk=source.pk)
    for other in others:
        # Never twice: a host that cannot be asked might run it (moved there by hand); the restart waits for
        # it, unless it is on standby (emptied, then powered off) or confirmed down as well.
        silent = Conflict(f"{other.name} does not answer either: {vm.name} might run there, so the restart waits.")
        if other.status not in HostStatus.REACHABLE:
            if other.status != HostStatus.STANDBY and other.confirmed_down_at is None:
                raise silent
            continue
        try:
            found = get_driver(other.uri).domain_info(uuid)
        except NotFound:
            continue
        except PortalError:
            raise silent from None
        if found.state.is_active:
            running_on, info = other, found
            break
        leftovers.append(other)
    explanation: dict = {}
    if running_on is not None:
        target = running_on
        ctx.log(f"{vm.name} already runs on {target.name}: the record follows it")
        pools = _target_pools(vm, target)
        domain_type = vm.domain_type
    else:
        local = local_storage(vm)
        if local:
            raise Conflict(f"{vm.name} cannot restart elsewhere: its disks are on host-local storage "
                           f"({', '.join(local)}).")
        ctx.progress(30, "Choosing a host")
        try:
            placement = schedule(request=vm_request(vm), cluster=source.cluster,
                                 exclude_host_ids=frozenset({source.pk}))
        except Conflict as exc:
            cluster_capacity_short(cluster_id=source.cluster_id, reason=f"HA restart of {vm.name}: {exc.message}")
            raise
        target, explanation = placement.host, placement.explanation
        ctx.progress(45, f"Preparing storage and networks on {target.name}")
        pools = _target_pools(vm, target)
        for other in leftovers:
            if other.pk != target.pk:
                get_driver(other.uri).undefine(uuid)  # a definition an earlier, failed attempt left there
        _ensure_networks(vm, target)
        driver = get_driver(target.uri)
        domain_type = driver.resolve_domain_type(target.effective_domain_type)
        vm.host = target  # the spec is built for where it will run (display address, contributors)
        ctx.progress(60, f"Defining {vm.name} on {target.name}")
        driver.define(build_spec(vm, domain_type=domain_type))
        ctx.progress(80, f"Starting {vm.name} on {target.name}")
        try:
            info = driver.start(uuid)
        except PortalError:
            try:
                driver.undefine(uuid)
            except PortalError:
                pass
            raise
    assert info is not None
    with transaction.atomic():
        for volume_id, pool in pools.items():
            Volume.objects.filter(pk=volume_id).update(pool=pool)
        VM.objects.filter(pk=vm.pk).update(host=target, domain_type=domain_type, known_status="")
        vm.host = target
        vm_set_status(vm, status_for(info.state), last_error="", power_state=info.state,
                      observed_at=timezone.now())
        audit(actor=None, via=Via.SYSTEM, action="vm.ha_restarted", target=vm, job=ctx.job,
              message=f"Restarted {vm.name} on {target.name} ({source.name} is confirmed down)",
              data={"from": source.name, "to": target.name, "attempt": ctx.params.get("attempt", 1)})
    return {"from": source.name, "to": target.name, "stale_host_id": source.pk, "adopted": running_on is not None,
            "attempt": ctx.params.get("attempt", 1), "explanation": explanation}


def ha_pass() -> dict[str, list[str]]:
    """Restart what the HA plan says (jobs), audit once what cannot restart; clean stale copies of hosts back up."""
    outcome: dict[str, list[str]] = {"restarting": [], "waiting": [], "skipped": [], "given_up": []}
    for d in ha_plan():
        if d.action == "restart":
            if vm_ha_restart(vm=d.vm, source=d.host, attempt=d.attempt) is not None:
                outcome["restarting"].append(d.vm.name)
        elif d.action == "skip":
            _audit_once(d.vm, d.host.confirmed_down_at, f"Not restarted elsewhere: {d.reason}")
            outcome["skipped"].append(d.vm.name)
        elif d.action == "give_up":
            _audit_once(d.vm, d.host.confirmed_down_at, f"HA restart given up: {d.reason}")
            outcome["given_up"].append(d.vm.name)
        else:
            outcome["waiting"].append(d.vm.name)
    ha_cleanup_stale()
    return outcome


def ha_on_host_down(sender: Any = None, *, host: Host, **_: Any) -> None:
    """Receiver of cluster.signals.host_down_confirmed: the HA pass runs at once, not at the next monitor turn."""
    ha_pass()


def ha_cleanup_stale(*, days: int = 7) -> list[str]:
    """A host back up after an HA restart still has the VM's old definition: it is undefined (never started
    again: the VM runs elsewhere on the same disks). Done once per restart, recorded on its job."""
    cleaned = []
    since = timezone.now() - timedelta(days=days)
    for job in Job.objects.filter(kind=HA_JOB, status=JobStatus.SUCCEEDED, finished_at__gte=since):
        result = job.result or {}
        if not result.get("stale_host_id") or result.get("stale_cleaned"):
            continue
        stale = Host.objects.filter(pk=result["stale_host_id"], status=HostStatus.UP).first()
        vm = VM.objects.filter(pk=int(job.target_id)).first()
        if stale is None or vm is None:
            continue
        if vm.host_id == stale.pk:  # it lives there again (migrated back): nothing is stale
            Job.objects.filter(pk=job.pk).update(result={**result, "stale_cleaned": True})
            continue
        driver = get_driver(stale.uri)
        try:
            info = driver.domain_info(str(vm.uuid))
        except NotFound:
            info = None
        except PortalError:
            continue
        if info is not None and info.state.is_active:
            audit(actor=None, via=Via.SYSTEM, action="vm.ha_stale", target=vm, outcome=AuditEvent.Outcome.FAILED,
                  message=f"{vm.name} runs on {stale.name} too, next to {vm.host.name}: left alone for an administrator")
            Job.objects.filter(pk=job.pk).update(result={**result, "stale_cleaned": True, "stale_running": True})
            continue
        if info is not None:
            driver.undefine(str(vm.uuid))
            audit(actor=None, via=Via.SYSTEM, action="vm.ha_stale", target=vm,
                  message=f"Removed the old definition of {vm.name} from {stale.name} (it runs on {vm.host.name})")
        Job.objects.filter(pk=job.pk).update(result={**result, "stale_cleaned": True})
        cleaned.append(vm.name)
    return cleaned


# --- load balancing -----------------------------------------------------------------------------

_last_balance: dict[int, float] = {}  # cluster id -> monotonic time of its last periodic pass (this process)


def _cluster_vm_ids(cluster: Cluster) -> list[str]:
    return [str(pk) for pk in VM.objects.filter(host__cluster=cluster).exclude(status=VMStatus.DELETED)
            .values_list("pk", flat=True)]


@dataclass
class BalancingPlan:
    """The moves to start now, and the proposed ones held back (with why)."""

    moves: list[Move] = field(default_factory=list)
    held: list[tuple[Move, str]] = field(default_factory=list)
    in_flight: int = 0


def balancing_plan(*, cluster: Cluster, proposals: list[Move] | None = None,
                   now: datetime | None = None) -> BalancingPlan:
    """Filter the balancer's proposals: no VM migrated within the cooldown (no ping-pong), at most
    max_concurrent_migrations in flight in the cluster, one move per VM, only VMs still running on the source."""
    now = now or timezone.now()
    proposals = propose_balancing(cluster=cluster) if proposals is None else proposals
    limit = policy_value(cluster, "max_concurrent_migrations")
    cooldown = policy_value(cluster, "balancing_cooldown_seconds")
    vm_ids = _cluster_vm_ids(cluster)
    migrations = Job.objects.filter(kind=MIGRATE_JOB, target_type="vm", target_id__in=vm_ids)
    plan = BalancingPlan(in_flight=migrations.filter(status__in=JobStatus.ACTIVE).count())
    recent = {int(t) for t in migrations.filter(created_at__gte=now - timedelta(seconds=cooldown))
              .values_list("target_id", flat=True)}
    vms = {v.pk: v for v in VM.objects.filter(pk__in=[m.vm_id for m in proposals])}
    seen: set[int] = set()
    for move in proposals:
        vm = vms.get(move.vm_id)
        if vm is None or vm.status not in VMStatus.ACTIVE or vm.host_id != move.source_host_id:
            plan.held.append((move, "the VM is no longer running on the source host"))
        elif move.vm_id in seen:
            plan.held.append((move, "one move per VM and pass"))
        elif move.vm_id in recent:
            plan.held.append((move, f"migrated within the last {cooldown} s (no ping-pong)"))
        elif plan.in_flight + len(plan.moves) >= limit:
            plan.held.append((move, f"at most {limit} migration(s) at once in the cluster"))
        else:
            plan.moves.append(move)
        seen.add(move.vm_id)
    return plan


def _apply_moves(*, actor: Actor, via: str, cluster: Cluster, moves: list[Move]) -> list[dict]:
    migrate = _vm_migrate()
    started: list[dict[str, Any]] = []
    for move in moves:
        vm = VM.objects.get(pk=move.vm_id)
        target = Host.objects.get(pk=move.target_host_id)
        try:
            result = migrate(actor=actor, via=via, vm=vm, host=target, reason=f"balancing: {move.reason}")
        except PortalError as exc:
            started.append({"vm": vm.name, "to": target.name, "error": exc.message})
            continue
        started.append({"vm": vm.name, "to": target.name, "job": str(result.job.pk) if result.job else None,
                        "reason": move.reason})
    if started:
        audit(actor=actor, via=via, action="cluster.balance", target=cluster,
              message=f"Balancing {cluster.name}: " + ", ".join(
                  f"{s['vm']} → {s['to']}" + (f" (refused: {s['error']})" if "error" in s else "") for s in started),
              data={"moves": started})
    return started


def cluster_balance(*, actor: Actor, via: str, cluster: Cluster) -> list[dict]:
    """One balancing pass of `cluster` now (the admin's "Balance now"): the allowed moves are started."""
    return _apply_moves(actor=actor, via=via, cluster=cluster, moves=balancing_plan(cluster=cluster).moves)


def balancing_pass() -> dict[str, list[dict]]:
    """Every cluster with balancing on, at most every balancing_interval_seconds: apply its balancer's moves."""
    done: dict[str, list[dict]] = {}
    for cluster in Cluster.objects.filter(balancing_enabled=True):
        due = _last_balance.get(cluster.pk, float("-inf")) + policy_value(cluster, "balancing_interval_seconds")
        if time.monotonic() < due:
            continue
        _last_balance[cluster.pk] = time.monotonic()
        plan = balancing_plan(cluster=cluster)
        if plan.moves:
            done[cluster.name] = _apply_moves(actor=None, via=Via.SYSTEM, cluster=cluster, moves=plan.moves)
    return done


# --- power saving -------------------------------------------------------------------------------

@dataclass
class PowerPlan:
    """Hosts to put on standby and to wake, with why (host name -> reason)."""

    standby: list[Host] = field(default_factory=list)
    wake: list[Host] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    free_memory_percent: float | None = None


def _recent(action: str, *, target_type: str, target_ids: Iterable[Any], since: datetime) -> set[str]:
    return set(AuditEvent.objects.filter(action=action, target_type=target_type, at__gte=since,
                                         outcome=AuditEvent.Outcome.SUCCEEDED,
                                         target_id__in=[str(t) for t in target_ids])
               .values_list("target_id", flat=True))


def power_saving_plan(*, cluster: Cluster, now: datetime | None = None,
                      loads: dict[int, HostLoad] | None = None) -> PowerPlan:
    """Which of the cluster's hosts go on standby or wake now.

    Standby: up, enabled, no VM on it running or in a job, a power agent (off and on), up for at least
    standby_delay_seconds; while the cluster keeps min_spare_hosts empty up hosts, one up host at least,
    and free memory at or above low_free_memory_percent without it.
    Wake (one per pass): a standby host with a power-on command when placement found no room lately
    (`cluster.capacity_short`) or free memory of the up hosts is below low_free_memory_percent, unless
    another host is already waking (powered on within wake_timeout_seconds).
    """
    now = now or timezone.now()
    loads = host_loads() if loads is None else loads
    hosts = list(Host.objects.filter(cluster=cluster, enabled=True))
    up = [h for h in hosts if h.status == HostStatus.UP]
    asleep = [h for h in hosts if h.status == HostStatus.STANDBY]
    occupied = set(VM.objects.filter(host__in=up, status__in=_ON_HOST).values_list("host_id", flat=True))
    total = sum(h.memory_mib for h in up)
    used = sum(loads.get(h.pk, HostLoad()).memory_mib for h in up)
    low = policy_value(cluster, "low_free_memory_percent")
    plan = PowerPlan(free_memory_percent=round(100 * (total - used) / total, 1) if total else None)
    wake_window = now - timedelta(seconds=policy_value(cluster, "wake_timeout_seconds"))
    waking = _recent("host.power_on", target_type="host", target_ids=[h.pk for h in asleep], since=wake_window)
    woken_at = AuditEvent.objects.filter(action="host.power_on", target_type="host",
                                         target_id__in=[str(h.pk) for h in hosts]).order_by("-at").first()
    short_since = max(wake_window, woken_at.at) if woken_at else wake_window
    short = AuditEvent.objects.filter(action="cluster.capacity_short", target_type="cluster",
                                      target_id=str(cluster.pk), at__gt=short_since).first()
    pressed = plan.free_memory_percent is not None and plan.free_memory_percent < low
    if short is not None or pressed or not up:
        if not waking:
            sleepers = sorted((h for h in asleep if power_agent_configured(h, ON)), key=lambda h: -h.memory_mib)
            if sleepers:
                plan.wake.append(sleepers[0])
                plan.reasons[sleepers[0].name] = (
                    f"placement found no room: {short.message}" if short is not None else
                    "no host is up" if not up else f"free memory {plan.free_memory_percent}% < {low}%")
        return plan
    delay = timedelta(seconds=policy_value(cluster, "standby_delay_seconds"))
    min_spare = policy_value(cluster, "min_spare_hosts")
    empty = [h for h in up if h.pk not in occupied]
    remaining_up, remaining_empty, remaining_total = len(up), len(empty), total
    for host in sorted(empty, key=lambda h: (h.memory_mib, h.name)):
        if not (power_agent_configured(host, OFF) and power_agent_configured(host, ON)):
            continue
        if host.status_changed_at and now - host.status_changed_at < delay:
            continue
        if remaining_up - 1 < 1 or remaining_empty - 1 < min_spare:
            break
        left = remaining_total - host.memory_mib
        if left <= 0 or 100 * (left - used) / left < low:
            continue
        plan.standby.append(host)
        plan.reasons[host.name] = "no VM runs there"
        remaining_up, remaining_empty, remaining_total = remaining_up - 1, remaining_empty - 1, left
    return plan


def _standby(host: Host, reason: str) -> bool:
    """Take the host out of placement, check again that nothing is on it, then power it off (back up on failure)."""
    with transaction.atomic():
        if host.cluster_id:
            Cluster.objects.select_for_update().filter(pk=host.cluster_id).first()  # placements wait (scheduler lock)
        locked = Host.objects.select_for_update().get(pk=host.pk)
        if locked.status != HostStatus.UP or VM.objects.filter(host=locked, status__in=_ON_HOST).exists():
            return False
        Host.objects.filter(pk=host.pk).update(status=HostStatus.STANDBY, status_changed_at=timezone.now())
    try:
        host_power_off(actor=None, via=Via.SYSTEM, host=host, reason=f"power saving: {reason}")
    except PortalError as exc:
        Host.objects.filter(pk=host.pk, status=HostStatus.STANDBY).update(status=HostStatus.UP,
                                                                          status_changed_at=timezone.now())
        log.warning("power saving: %s stays up: %s", host.name, exc.message)
        return False
    return True


_power_busy: set[int] = set()  # hosts whose agent command runs now (this process): not acted on again meanwhile
_power_lock = threading.Lock()


def _power_act(host: Host, act: Callable[[], object], *, wait: bool) -> bool:
    """Run one agent act for `host` (at most one at a time per host); in a thread when not `wait`ing, so an
    agent command (up to its timeout) never holds up the monitor's turn. True when it ran (or was started)."""
    with _power_lock:
        if host.pk in _power_busy:
            return False
        _power_busy.add(host.pk)

    def run() -> bool:
        try:
            return bool(act())
        except PortalError as exc:
            log.warning("power saving on %s: %s", host.name, exc.message)
            return False
        finally:
            with _power_lock:
                _power_busy.discard(host.pk)
            if not wait:
                close_old_connections()

    if wait:
        return run()
    threading.Thread(target=run, name=f"power-{host.name}", daemon=True).start()
    return True


def power_saving_pass(*, wait: bool = True) -> dict[str, dict[str, list[str]]]:
    """Every cluster with power saving on: standby and wake what its plan says (the power agent, audited).

    `wait=False` (the monitor's housekeeping): the agent commands run in threads of their own."""
    done: dict[str, dict[str, list[str]]] = {}
    for cluster in Cluster.objects.filter(power_saving_enabled=True):
        plan = power_saving_plan(cluster=cluster)
        acted: dict[str, list[str]] = {"standby": [], "woken": []}
        for host in plan.standby:
            reason = plan.reasons.get(host.name, "")
            if _power_act(host, functools.partial(_standby, host, reason), wait=wait):
                acted["standby"].append(host.name)
        for host in plan.wake:
            why = f"power saving: {plan.reasons.get(host.name, 'capacity is short')}"
            if _power_act(host, functools.partial(host_power_on, actor=None, via=Via.SYSTEM, host=host, reason=why),
                          wait=wait):
                acted["woken"].append(host.name)
        if acted["standby"] or acted["woken"]:
            done[cluster.name] = acted
    return done
