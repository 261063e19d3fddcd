"""Cluster operations: maintenance, HA restart, load balancing and power saving.

The decisions (plans) are checked on synthetic clusters: hosts libvirt cannot reach, VM rows, job and
audit rows. The acts run once on the real two-host harness (namespace hosts, real QEMU): HA after killing
a host's libvirtd and QEMU by PID, power saving with the command agent taking a host down and up, and
maintenance with live migration.
"""

from __future__ import annotations

import os
import signal
import stat
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import override_settings
from django.utils import timezone

from cluster.choices import HostStatus
from cluster.housekeeping import housekeeping_run
from cluster.maintenance import host_activate, host_maintenance_start
from cluster.models import Cluster, Host
from cluster.placement import HostLoad
from cluster.scheduler import Move
from portal.choices import JobStatus
from portal.exceptions import Conflict
from portal.models import AuditEvent, Job
from storage.models import StoragePool, Volume
from vms import cluster_ops
from vms.choices import VMStatus
from vms.cluster_ops import balancing_plan, evacuation_plan, ha_pass, ha_plan, power_saving_plan
from vms.models import VM, VMDisk

ROOT = Path(__file__).resolve().parents[2]
NSHOST = ROOT / "scripts" / "nshost.sh"


# --- synthetic clusters -------------------------------------------------------------------------

def make_cluster(name: str = "lab", **fields) -> Cluster:
    return Cluster.objects.create(name=name, **fields)


def make_host(cluster: Cluster, name: str, *, status: str = HostStatus.UP, memory_mib: int = 8192,
              **fields) -> Host:
    """A host libvirt cannot reach (nothing is asked of it), with a shared pool and a local one."""
    host = Host.objects.create(name=name, uri=f"test:///nonexistent/{name}.xml", status=status, cluster=cluster,
                               memory_mib=memory_mib, cpus=8, **fields)
    StoragePool.objects.create(host=host, name="shared", path="/srv/shared", shared=True)
    StoragePool.objects.create(host=host, name="local", path=f"/var/lib/{name}", shared=False)
    return host


def make_vm(owner, host: Host, name: str, *, status: str = VMStatus.RUNNING, pool: str = "shared",
            memory_mib: int = 1024, **fields) -> VM:
    vm = VM.objects.create(name=name, owner=owner, host=host, vcpus=1, memory_mib=memory_mib, disk_gib=1,
                           status=status, domain_name=f"t-{name}", **fields)
    volume = Volume.objects.create(pool=StoragePool.objects.get(host=host, name=pool), name=f"{name}.qcow2",
                                   capacity_gib=1, path=f"/srv/{pool}/{name}.qcow2")
    VMDisk.objects.create(vm=vm, volume=volume, target="vda")
    return vm


def migrate_job(vm: VM, status: str = JobStatus.SUCCEEDED, **fields) -> Job:
    return Job.objects.create(kind="vm.migrate", target_type="vm", target_id=str(vm.pk), target_name=vm.name,
                              status=status, **fields)


# --- maintenance --------------------------------------------------------------------------------

def test_evacuation_plan_moves_running_waits_for_busy_and_leaves_stopped(db, alice):
    cluster = make_cluster()
    host = make_host(cluster, "a")
    make_vm(alice, host, "web", status=VMStatus.RUNNING)
    make_vm(alice, host, "frozen", status=VMStatus.PAUSED)
    make_vm(alice, host, "booting", status=VMStatus.STARTING)
    make_vm(alice, host, "off", status=VMStatus.STOPPED)
    make_vm(alice, host, "gone", status=VMStatus.DELETED)
    plan = evacuation_plan(host)
    assert sorted(v.name for v in plan.migrate) == ["frozen", "web"]
    assert [v.name for v in plan.busy] == ["booting"]
    assert [v.name for v in plan.stay] == ["off"]


def test_maintenance_of_a_host_with_only_stopped_vms_is_reached_at_once(db, alice, admin_user,
                                                                         django_capture_on_commit_callbacks):
    """Stopped VMs stay defined on the host: nothing runs there, so it reaches maintenance; the report says so."""
    host = make_host(make_cluster(), "a")
    make_vm(alice, host, "off", status=VMStatus.STOPPED)
    with django_capture_on_commit_callbacks(execute=True):
        job = host_maintenance_start(actor=admin_user, via="admin", host=host)
    job.refresh_from_db()
    host.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert host.status == HostStatus.MAINTENANCE
    assert job.result["stays_stopped"] == ["off"] and job.result["reached"] is True
    assert AuditEvent.objects.filter(action="host.maintenance", target_id=str(host.pk)).exists()
    host_activate(actor=admin_user, via="admin", host=host)
    host.refresh_from_db()
    assert host.status == HostStatus.UP


def test_maintenance_waits_with_a_report_when_a_vm_cannot_move(db, alice, admin_user, monkeypatch,
                                                               django_capture_on_commit_callbacks):
    """No host fits: the host stays preparing (no new VMs), the job fails with the report, the audit keeps it;
    once the VM is stopped by hand, the monitor's housekeeping puts the host in maintenance."""
    cluster = make_cluster()
    host = make_host(cluster, "a")
    vm = make_vm(alice, host, "big")
    tried = []

    def no_room(*, actor, via, vm, host=None, reason=""):
        tried.append((vm.name, host, reason))
        raise Conflict("No hypervisor host has room for this VM; ask an administrator.")

    monkeypatch.setattr(cluster_ops, "_vm_migrate", lambda: no_room)
    with django_capture_on_commit_callbacks(execute=True):
        job = host_maintenance_start(actor=admin_user, via="admin", host=host)
    job.refresh_from_db()
    host.refresh_from_db()
    assert tried == [("big", None, "maintenance of a")]
    assert host.status == HostStatus.PREPARING_FOR_MAINTENANCE
    assert job.status == JobStatus.FAILED
    assert "could not move: big (No hypervisor host has room" in job.error
    assert "waits in preparing for maintenance while these still run there: big" in job.error
    report = AuditEvent.objects.get(action="host.maintenance.report")
    assert report.outcome == AuditEvent.Outcome.FAILED and report.data["failed"][0]["vm"] == "big"
    assert AuditEvent.objects.filter(action="cluster.capacity_short", target_id=str(cluster.pk)).exists()
    VM.objects.filter(pk=vm.pk).update(status=VMStatus.STOPPED)
    housekeeping_run()
    host.refresh_from_db()
    assert host.status == HostStatus.MAINTENANCE


def test_maintenance_migrates_at_most_the_limit_at_once(db, alice, admin_user, monkeypatch,
                                                        django_capture_on_commit_callbacks):
    """The evacuator never has more than max_concurrent_migrations migration jobs in flight."""
    cluster = make_cluster(policy_properties={"max_concurrent_migrations": 2})
    host = make_host(cluster, "a")
    other = make_host(cluster, "b")
    for i in range(5):
        make_vm(alice, host, f"vm{i}")
    peak = []

    class Result:
        def __init__(self, job):
            self.job = job

    def fake_migrate(*, actor, via, vm, host=None, reason=""):
        # A stand-in for vms.migration: the job is recorded; it "finishes" when the next one is asked for.
        in_flight = Job.objects.filter(kind="vm.migrate", status=JobStatus.RUNNING)
        peak.append(in_flight.count() + 1)
        done = in_flight.order_by("created_at").first()
        if done is not None and in_flight.count() + 1 > 2:
            raise AssertionError("more than two migrations at once")
        job = migrate_job(vm, status=JobStatus.RUNNING)
        return Result(job)

    def finish_all():
        for job in Job.objects.filter(kind="vm.migrate", status=JobStatus.RUNNING):
            VM.objects.filter(pk=int(job.target_id)).update(host=other)
            Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED)

    monkeypatch.setattr(cluster_ops, "_vm_migrate", lambda: fake_migrate)
    monkeypatch.setattr(cluster_ops.time, "sleep", lambda s: finish_all())
    with django_capture_on_commit_callbacks(execute=True):
        job = host_maintenance_start(actor=admin_user, via="admin", host=host)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert max(peak) <= 2 and len(peak) == 5
    assert sorted(m["vm"] for m in job.result["moved"]) == [f"vm{i}" for i in range(5)]
    assert job.progress == 100
    host.refresh_from_db()
    assert host.status == HostStatus.MAINTENANCE


def test_maintenance_refused_for_a_host_that_is_not_up(db, admin_user):
    host = make_host(make_cluster(), "a", status=HostStatus.NON_RESPONSIVE)
    with pytest.raises(Exception, match="only an up host can go into maintenance"):
        host_maintenance_start(actor=admin_user, via="admin", host=host)


# --- HA -----------------------------------------------------------------------------------------

def test_ha_plan_restarts_only_ha_vms_of_confirmed_down_hosts_in_priority_order(db, alice):
    cluster = make_cluster()
    dead = make_host(cluster, "a", status=HostStatus.DOWN, confirmed_down_at=timezone.now())
    make_host(cluster, "b")
    silent = make_host(cluster, "c", status=HostStatus.NON_RESPONSIVE)  # unreachable, not confirmed down
    make_vm(alice, dead, "low", highly_available=True, ha_priority=10)
    make_vm(alice, dead, "high", highly_available=True, ha_priority=90)
    make_vm(alice, dead, "unknown-was-running", highly_available=True, status=VMStatus.UNKNOWN,
            known_status=VMStatus.RUNNING)
    make_vm(alice, dead, "plain")  # not highly available
    make_vm(alice, dead, "stopped", highly_available=True, status=VMStatus.STOPPED)
    make_vm(alice, dead, "local", highly_available=True, pool="local")
    make_vm(alice, silent, "maybe-running", highly_available=True)
    decisions = {d.vm.name: d for d in ha_plan()}
    assert set(decisions) == {"low", "high", "unknown-was-running", "local"}
    # Higher ha_priority first (the default is 50).
    assert [d.vm.name for d in ha_plan() if d.action == "restart"] == ["high", "unknown-was-running", "low"]
    assert decisions["local"].action == "skip"
    assert "disks are on host-local storage" in decisions["local"].reason


def test_ha_is_off_in_a_cluster_without_ha(db, alice):
    cluster = make_cluster(ha_enabled=False)
    dead = make_host(cluster, "a", status=HostStatus.DOWN, confirmed_down_at=timezone.now())
    make_vm(alice, dead, "web", highly_available=True)
    assert ha_plan() == []


def test_ha_retries_with_backoff_and_gives_up(db, alice):
    cluster = make_cluster(policy_properties={"ha_max_attempts": 3, "ha_retry_seconds": 30})
    down_at = timezone.now() - timedelta(hours=1)
    dead = make_host(cluster, "a", status=HostStatus.DOWN, confirmed_down_at=down_at)
    vm = make_vm(alice, dead, "web", highly_available=True)
    now = timezone.now()

    def failed(at):
        job = Job.objects.create(kind="vm.ha_restart", target_type="vm", target_id=str(vm.pk),
                                 status=JobStatus.FAILED, finished_at=at)
        Job.objects.filter(pk=job.pk).update(created_at=at)

    failed(now - timedelta(seconds=10))
    [d] = ha_plan(now=now)
    assert d.action == "wait" and d.attempt == 1  # 30 s after the first failure
    [d] = ha_plan(now=now + timedelta(seconds=25))
    assert d.action == "restart" and d.attempt == 2
    failed(now)
    [d] = ha_plan(now=now + timedelta(seconds=45))
    assert d.action == "wait"  # 60 s after the second
    [d] = ha_plan(now=now + timedelta(seconds=61))
    assert d.action == "restart" and d.attempt == 3
    failed(now + timedelta(seconds=61))
    [d] = ha_plan(now=now + timedelta(hours=1))
    assert d.action == "give_up"
    Job.objects.create(kind="vm.stop", target_type="vm", target_id=str(vm.pk), status=JobStatus.RUNNING)
    [d] = ha_plan(now=now + timedelta(hours=1))
    assert d.action == "wait" and "job is under way" in d.reason


def test_ha_pass_audits_an_unrestartable_vm_once(db, alice):
    cluster = make_cluster()
    dead = make_host(cluster, "a", status=HostStatus.DOWN, confirmed_down_at=timezone.now())
    make_vm(alice, dead, "local", highly_available=True, pool="local")
    assert ha_pass()["skipped"] == ["local"]
    ha_pass()
    [event] = AuditEvent.objects.filter(action="vm.ha_restart", outcome=AuditEvent.Outcome.DENIED)
    assert "disks are on host-local storage" in event.message


# --- balancing ----------------------------------------------------------------------------------

def test_balancing_plan_limits_moves_and_avoids_ping_pong(db, alice):
    cluster = make_cluster(balancing_enabled=True, policy_properties={"max_concurrent_migrations": 2,
                                                                      "balancing_cooldown_seconds": 600})
    a, b = make_host(cluster, "a"), make_host(cluster, "b")
    v1, v2, v3, v4 = (make_vm(alice, a, f"v{i}") for i in range(1, 5))
    stopped = make_vm(alice, a, "off", status=VMStatus.STOPPED)
    migrate_job(v1, created_at=timezone.now())  # just moved here: not again within the cooldown
    old = migrate_job(v2)
    Job.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=1))
    proposals = [Move(v.pk, a.pk, b.pk, "a is busier") for v in (v1, v2, v3, v3, v4, stopped)]
    plan = balancing_plan(cluster=cluster, proposals=proposals)
    assert [m.vm_id for m in plan.moves] == [v2.pk, v3.pk]
    held = {(m.vm_id, why) for m, why in plan.held}
    assert (v1.pk, "migrated within the last 600 s (no ping-pong)") in held
    assert (v3.pk, "one move per VM and pass") in held
    assert (v4.pk, "at most 2 migration(s) at once in the cluster") in held
    assert (stopped.pk, "the VM is no longer running on the source host") in held


def test_balancing_plan_counts_migrations_in_flight(db, alice):
    cluster = make_cluster(balancing_enabled=True, policy_properties={"max_concurrent_migrations": 1})
    a, b = make_host(cluster, "a"), make_host(cluster, "b")
    busy, v = make_vm(alice, b, "busy"), make_vm(alice, a, "v")
    migrate_job(busy, status=JobStatus.RUNNING, created_at=timezone.now() - timedelta(hours=1))
    plan = balancing_plan(cluster=cluster, proposals=[Move(v.pk, a.pk, b.pk, "spread")])
    assert plan.in_flight == 1 and plan.moves == []


def test_balancing_pass_applies_moves_at_most_every_interval(db, alice, monkeypatch):
    cluster = make_cluster(balancing_enabled=True, policy_properties={"balancing_interval_seconds": 3600})
    a, b = make_host(cluster, "a"), make_host(cluster, "b")
    v = make_vm(alice, a, "v")
    asked = []
    monkeypatch.setattr(cluster_ops, "propose_balancing", lambda cluster: [Move(v.pk, a.pk, b.pk, "spread")])

    def fake_migrate(*, actor, via, vm, host=None, reason=""):
        asked.append((vm.name, host.name, reason, actor, via))
        raise Conflict("test: not migrating")

    monkeypatch.setattr(cluster_ops, "_vm_migrate", lambda: fake_migrate)
    cluster_ops._last_balance.clear()
    cluster_ops.balancing_pass()
    cluster_ops.balancing_pass()  # within the interval: nothing
    assert asked == [("v", "b", "balancing: spread", None, "system")]
    assert "refused: test: not migrating" in AuditEvent.objects.get(action="cluster.balance").message


# --- power saving -------------------------------------------------------------------------------

AGENT = {"power_on_command": "/bin/true on", "power_off_command": "/bin/true off"}


def test_power_saving_puts_empty_hosts_on_standby_keeping_spares(db, alice):
    cluster = make_cluster(power_saving_enabled=True, policy_properties={"min_spare_hosts": 1,
                                                                         "low_free_memory_percent": 10})
    busy = make_host(cluster, "busy", **AGENT)
    e1 = make_host(cluster, "e1", memory_mib=4096, **AGENT)
    make_host(cluster, "e2", memory_mib=8192, **AGENT)
    make_host(cluster, "no-agent")  # empty but without a power agent: stays up (and counts as a spare)
    make_vm(alice, busy, "web")
    plan = power_saving_plan(cluster=cluster, loads={busy.pk: HostLoad(memory_mib=1024, vms=1)})
    # Spares: e1, e2, no-agent are empty; one must stay empty-and-up. The smallest goes first.
    assert [h.name for h in plan.standby] == ["e1", "e2"]
    assert plan.reasons["e1"] == "no VM runs there" and plan.wake == []
    Host.objects.filter(pk=e1.pk).update(status_changed_at=timezone.now())  # just came up: not yet
    plan = power_saving_plan(cluster=cluster, loads={busy.pk: HostLoad(memory_mib=1024, vms=1)})
    assert [h.name for h in plan.standby] == ["e2"]


def test_power_saving_keeps_free_memory_and_one_host(db):
    cluster = make_cluster(power_saving_enabled=True, policy_properties={"low_free_memory_percent": 50})
    a = make_host(cluster, "a", memory_mib=8192, **AGENT)
    make_host(cluster, "b", memory_mib=8192, **AGENT)
    # a carries 6 GiB committed (no VM row: only the load); without b, free memory would drop to 25%.
    assert power_saving_plan(cluster=cluster, loads={a.pk: HostLoad(memory_mib=6144)}).standby == []
    plan = power_saving_plan(cluster=cluster, loads={})
    assert len(plan.standby) == 1  # never the last up host


def test_power_saving_wakes_a_standby_host_when_short(db):
    cluster = make_cluster(power_saving_enabled=True, policy_properties={"low_free_memory_percent": 20})
    a = make_host(cluster, "a", memory_mib=8192, **AGENT)
    make_host(cluster, "small", status=HostStatus.STANDBY, memory_mib=2048, **AGENT)
    big = make_host(cluster, "big", status=HostStatus.STANDBY, memory_mib=16384, **AGENT)
    assert power_saving_plan(cluster=cluster, loads={a.pk: HostLoad(memory_mib=4096)}).wake == []
    plan = power_saving_plan(cluster=cluster, loads={a.pk: HostLoad(memory_mib=7000)})
    assert plan.wake == [big] and "free memory 14.6% < 20%" in plan.reasons["big"]
    # Placement found no room: wake even with memory to spare.
    AuditEvent.objects.create(action="cluster.capacity_short", via="system", target_type="cluster",
                              target_id=str(cluster.pk), message="no host has 64 GiB")
    plan = power_saving_plan(cluster=cluster, loads={})
    assert plan.wake == [big] and "no host has 64 GiB" in plan.reasons["big"]
    # One is waking (powered on a moment ago): no second one.
    AuditEvent.objects.create(action="host.power_on", via="system", target_type="host", target_id=str(big.pk))
    assert power_saving_plan(cluster=cluster, loads={a.pk: HostLoad(memory_mib=7000)}).wake == []


def test_power_saving_pass_runs_the_agent(db, tmp_path):
    log = tmp_path / "agent.log"
    script = tmp_path / "agent.sh"
    script.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    cluster = make_cluster(power_saving_enabled=True)
    make_host(cluster, "a", power_on_command=f"{script} on {{host}}", power_off_command=f"{script} off {{host}}")
    b = make_host(cluster, "b", power_on_command=f"{script} on {{host}}", power_off_command=f"{script} off {{host}}")
    assert cluster_ops.power_saving_pass() == {"lab": {"standby": ["a"], "woken": []}}
    assert log.read_text() == "off a\n"
    assert Host.objects.get(name="a").status == HostStatus.STANDBY
    assert Host.objects.get(pk=b.pk).status == HostStatus.UP  # the last up host stays
    assert cluster_ops.power_saving_pass() == {}


# --- on the real two-host harness ---------------------------------------------------------------

def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _domains_with(uuid: str, hvs) -> list[tuple[str, str]]:
    found = []
    for hv in hvs:
        proc = hv.virsh("domstate", uuid)
        if proc.returncode == 0:
            found.append((hv.name, proc.stdout.strip()))
    return found


def test_ha_restarts_a_vm_of_a_killed_host_on_the_other_once(cluster_hosts, shared_vm_factory, ns_pair,
                                                             admin_user):
    """Host a's libvirtd and QEMU are killed by PID; the admin declares it down; the HA VM runs on b, once."""
    from cluster.power import host_declare_down
    from tests.conftest import CLUSTER_HOSTS, register_ns_host
    from tests.nshost import ns_up

    host_a, host_b = cluster_hosts
    hv_a = ns_pair[0]
    vm = shared_vm_factory("ha-web", on=host_a, highly_available=True, ha_priority=80)
    uuid = str(vm.uuid)
    assert _domains_with(uuid, ns_pair) == [(hv_a.name, "running")]
    try:
        for pid in hv_a.pids():  # libvirtd, virtlogd, QEMU: the host dies
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _wait(lambda: not hv_a.pids(), 20, "host a's processes to die")
        from cluster.services import host_refresh

        def unreachable() -> bool:  # heartbeats until it is non-responsive (a first failure may be a blip)
            host_refresh(host=host_a)
            return host_a.status in HostStatus.UNREACHABLE

        _wait(unreachable, 120, "host a to be non-responsive")  # HA never acts on silence alone
        assert ha_pass()["restarting"] == []  # not confirmed down: nothing
        host_declare_down(actor=admin_user, via="admin", host=host_a)  # the HA pass runs at once (signal)
        vm.refresh_from_db()
        assert vm.status == VMStatus.RUNNING and vm.host_id == host_b.pk, (vm.status, vm.last_error)
        [job] = Job.objects.filter(kind="vm.ha_restart", target_id=str(vm.pk))
        assert job.status == JobStatus.SUCCEEDED and job.result["to"] == host_b.name
        assert set(Volume.objects.filter(attachments__vm=vm).values_list("pool__host", flat=True)) == {host_b.pk}
        assert _domains_with(uuid, [ns_pair[1]]) == [(ns_pair[1].name, "running")]
        assert ha_pass() == {"restarting": [], "waiting": [], "skipped": [], "given_up": []}
        housekeeping_run()
        assert Job.objects.filter(kind="vm.ha_restart", target_id=str(vm.pk)).count() == 1
    finally:
        # Bring host a back for later tests (same address), re-registered; its stale definition is removed.
        addr = dict(CLUSTER_HOSTS)[hv_a.name]
        from portal.hypervisor import get_driver
        get_driver(hv_a.uri).close()
        ns_up(hv_a.name, addr=addr)
        register_ns_host(hv_a, cluster=host_a.cluster)
    host_a.refresh_from_db()
    assert host_a.status == HostStatus.UP and host_a.confirmed_down_at is None
    # A reconcile of a before the clean-up: the old definition is not reported as a stale copy for an
    # administrator to remove (the clean-up does it), nor listed as a foreign domain.
    from cluster.models import ForeignDomain
    from cluster.services import host_sync
    host_sync(host=host_a)
    stale = list(AuditEvent.objects.filter(action="vm.stale_copy", target_id=str(vm.pk)).values_list("at", "message"))
    assert not stale, stale
    assert not ForeignDomain.objects.filter(host=host_a, uuid=uuid).exists()
    ha_pass()  # cleans the old definition on a (never started again there)
    assert _domains_with(uuid, ns_pair) == [(ns_pair[1].name, "running")]


def test_power_saving_standby_and_wake_with_the_command_agent(cluster_hosts, ns_pair, admin_user):
    """b has no VM: power saving takes it down with `nshost.sh down`; short of room, it comes back with `up`."""
    from cluster.services import host_refresh
    from tests.conftest import register_ns_host

    host_a, host_b = cluster_hosts
    hv_b = ns_pair[1]
    Host.objects.filter(pk=host_b.pk).update(
        power_off_command=f"{NSHOST} down {{host}}", power_on_command=f"{NSHOST} up {{host}} --addr 10.99.7.2/24")
    # Only b has a power agent (a stays up); no delay after coming up, no memory threshold.
    Cluster.objects.filter(pk=host_a.cluster_id).update(power_saving_enabled=True, policy_properties={
        "low_free_memory_percent": 0, "standby_delay_seconds": 0})
    try:
        with override_settings(POWER_AGENT_TIMEOUT_SECONDS=180):
            done = cluster_ops.power_saving_pass()
        assert done == {"lab": {"standby": [host_b.name], "woken": []}}, done
        assert not hv_b.pids()  # the host is really off
        from portal.hypervisor import get_driver
        get_driver(hv_b.uri).close()
        host_b.refresh_from_db()
        assert host_refresh(host=host_b).status == HostStatus.STANDBY  # silent, on purpose: not "down"
        cluster_ops.cluster_capacity_short(cluster_id=host_a.cluster_id, reason="test: no room for a 64 GiB VM")
        with override_settings(POWER_AGENT_TIMEOUT_SECONDS=180):
            done = cluster_ops.power_saving_pass()
        assert done == {"lab": {"standby": [], "woken": [host_b.name]}}, done
        assert hv_b.pids()
        host_b.refresh_from_db()
        assert host_refresh(host=host_b).status == HostStatus.UP  # the monitor sees it: up again
    finally:
        if not hv_b.pids():
            from tests.nshost import ns_up
            ns_up(hv_b.name, addr="10.99.7.2/24")
        Cluster.objects.filter(pk=host_a.cluster_id).update(power_saving_enabled=False)
        register_ns_host(hv_b, cluster=host_a.cluster)


def test_maintenance_live_migrates_every_vm_away(cluster_hosts, shared_vm_factory, ns_pair, admin_user):
    host_a, host_b = cluster_hosts
    vms = [shared_vm_factory(f"mnt-{i}", on=host_a) for i in range(2)]  # the admin's quota: 3 VMs
    stopped = shared_vm_factory("mnt-off", on=host_a)
    VM.objects.filter(pk=stopped.pk).update(status=VMStatus.STOPPED)
    ns_pair[0].virsh("destroy", str(stopped.uuid))
    job = host_maintenance_start(actor=admin_user, via="admin", host=host_a)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    host_a.refresh_from_db()
    assert host_a.status == HostStatus.MAINTENANCE
    for vm in vms:
        vm.refresh_from_db()
        assert vm.host_id == host_b.pk and vm.status == VMStatus.RUNNING
        assert _domains_with(str(vm.uuid), ns_pair) == [(ns_pair[1].name, "running")]
    assert sorted(m["vm"] for m in job.result["moved"]) == ["mnt-0", "mnt-1"]
    assert job.result["stays_stopped"] == ["mnt-off"]
    host_activate(actor=admin_user, via="admin", host=host_a)


def test_a_vm_being_migrated_counts_once_in_the_evacuation_total():
    from types import SimpleNamespace

    from vms.cluster_ops import EvacuationPlan, _evacuation_count

    a, b, c = (SimpleNamespace(pk=n) for n in (1, 2, 3))
    # before: a and b run, c is starting (in a job)
    assert _evacuation_count(EvacuationPlan(migrate=[a, b], busy=[c], stay=[]), tried=set()) == 3
    # a and b are migrating (status `migrating`: busy) and tried; c still starting: 3, not 5
    assert _evacuation_count(EvacuationPlan(migrate=[], busy=[a, b, c], stay=[]), tried={1, 2}) == 3
    # a moved away, b failed and runs on the host again, c runs now and is tried
    assert _evacuation_count(EvacuationPlan(migrate=[b], busy=[c], stay=[]), tried={1, 2, 3}) == 3
