"""Load balancing on the real two-host harness (namespace hosts a and b, real QEMU, live migration).

The balancer's decisions are checked on synthetic clusters in tests/cluster/test_scheduler.py and
tests/vms/test_cluster_ops.py; here a balancing pass really moves firmware-only VMs whose disks are on the
shared pool:

- vm_count: three VMs on a, none on b. A pass (the monitor's `balancing_pass`) starts no more migrations
  than `max_concurrent_migrations`; the admin's "Balance now" finishes the job; the VMs run on b, the
  database says so, a has no domain of them. A pass right after proposes nothing although the counts
  are 1 and 2 (spread 0 would move one back): the ping-pong guard, shown by switching it off.
- power_saving: two VMs on a and one on b, all with little memory: the pass empties the less used host
  onto the other; b then carries nothing and the power agent (`nshost.sh down`) puts it on standby.
"""

from __future__ import annotations

import time
from pathlib import Path

from django.test import override_settings

from cluster.choices import HostStatus
from cluster.maintenance import cluster_balance_now
from cluster.models import Cluster, Host
from cluster.scheduler import propose_balancing
from portal.choices import JobStatus
from portal.models import AuditEvent, Job
from vms import cluster_ops
from vms.choices import VMStatus
from vms.cluster_ops import balancing_plan
from vms.models import VM

ROOT = Path(__file__).resolve().parents[2]
NSHOST = ROOT / "scripts" / "nshost.sh"


def _domains_with(uuid: str, hvs) -> list[tuple[str, str]]:
    """(host, state) of every namespace host that has a domain with this uuid."""
    found = []
    for hv in hvs:
        proc = hv.virsh("domstate", uuid)
        if proc.returncode == 0:
            found.append((hv.name, proc.stdout.strip()))
    return found


def _assert_runs_on(vm: VM, host: Host, hv, ns_pair) -> None:
    """The VM runs on `host` (libvirt), the database says so, and no other host has a domain of it."""
    vm.refresh_from_db()
    assert vm.host_id == host.pk and vm.status == VMStatus.RUNNING, (vm.host_id, vm.status, vm.last_error)
    assert _domains_with(str(vm.uuid), ns_pair) == [(hv.name, "running")]


def _migrations(vms) -> list[Job]:
    return list(Job.objects.filter(kind="vm.migrate", target_id__in=[str(v.pk) for v in vms]).order_by("created_at"))


def _set_cluster(cluster_id: int, **fields) -> Cluster:
    Cluster.objects.filter(pk=cluster_id).update(**fields)
    return Cluster.objects.get(pk=cluster_id)


def test_vm_count_balancing_moves_vms_to_the_empty_host_within_the_limit_and_never_back(
        cluster_hosts, shared_vm_factory, ns_pair, admin_user):
    host_a, host_b = cluster_hosts
    hv_a, hv_b = ns_pair
    vms = [shared_vm_factory(f"bal-{i}", on=host_a) for i in range(3)]  # the admin's quota: 3 VMs
    # Spread 0: the balancer evens out any difference; one migration at a time; a pass whenever asked.
    cluster = _set_cluster(host_a.cluster_id, policy="vm_count", balancing_enabled=True, policy_properties={
        "vm_count_spread": 0, "max_concurrent_migrations": 1, "balancing_interval_seconds": 0})

    [proposal] = propose_balancing(cluster=cluster)  # the budget: one move although 3 vs 0 wants two
    assert (proposal.source_host_id, proposal.target_host_id) == (host_a.pk, host_b.pk)
    assert "vmp-hosta runs 3 VMs, vmp-hostb 0" in proposal.reason

    # The monitor's periodic pass: exactly one migration (max_concurrent_migrations = 1).
    cluster_ops._last_balance.clear()
    done = cluster_ops.balancing_pass()
    assert list(done) == ["lab"] and len(done["lab"]) == 1, done
    [first] = done["lab"]
    assert first["to"] == host_b.name and "error" not in first, first
    [job] = _migrations(vms)
    assert job.status == JobStatus.SUCCEEDED, job.error
    moved = VM.objects.get(name=first["vm"])
    _assert_runs_on(moved, host_b, hv_b, ns_pair)
    event = AuditEvent.objects.get(action="cluster.balance")
    assert event.actor is None and f"{moved.name} → {host_b.name}" in event.message

    # The admin's "Balance now" with room for two migrations: 2 vs 1 → one more VM goes (1 vs 2); the VM
    # that just moved is not moved back in the same breath.
    cluster = _set_cluster(cluster.pk, policy_properties={**cluster.policy_properties, "max_concurrent_migrations": 2})
    started = cluster_balance_now(actor=admin_user, via="admin", cluster=cluster)
    assert len(started) == 1 and started[0]["to"] == host_b.name and started[0]["vm"] != moved.name, started
    second = VM.objects.get(name=started[0]["vm"])
    _assert_runs_on(second, host_b, hv_b, ns_pair)
    [stayed] = [v for v in vms if v.pk not in (moved.pk, second.pk)]
    _assert_runs_on(stayed, host_a, hv_a, ns_pair)
    assert [j.status for j in _migrations(vms)] == [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]

    # A pass right after: b runs 2, a runs 1, spread 0 — but both VMs on b moved moments ago: nothing.
    assert propose_balancing(cluster=cluster) == []
    assert balancing_plan(cluster=cluster).moves == []
    cluster_ops._last_balance.clear()
    assert cluster_ops.balancing_pass() == {}
    assert len(_migrations(vms)) == 2
    # The guard is what holds them: without it the balancer would send one straight back to a, and the
    # cluster's own cooldown (read from the migration jobs) would still hold that move.
    unguarded = _set_cluster(cluster.pk, policy_properties={**cluster.policy_properties, "migration_guard_minutes": 0})
    proposals = propose_balancing(cluster=unguarded)
    back = proposals[0]
    assert back.vm_id in (moved.pk, second.pk) and (back.source_host_id, back.target_host_id) == (host_b.pk, host_a.pk)
    plan = balancing_plan(cluster=unguarded, proposals=proposals)  # nothing is applied here
    assert (back, "migrated within the last 600 s (no ping-pong)") in plan.held
    assert not {m.vm_id for m in plan.moves} & {moved.pk, second.pk}
    for vm in (moved, second):
        _assert_runs_on(vm, host_b, hv_b, ns_pair)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_power_saving_consolidates_onto_one_host_and_the_empty_one_goes_to_standby(
        cluster_hosts, shared_vm_factory, ns_pair, admin_user):
    from cluster.services import host_refresh
    from tests.conftest import register_ns_host

    host_a, host_b = cluster_hosts
    hv_a, hv_b = ns_pair
    on_a = [shared_vm_factory(f"ps-a{i}", on=host_a) for i in range(2)]
    lonely = shared_vm_factory("ps-b0", on=host_b)
    # Low use everywhere: a commits 128 MiB, b 64 MiB. low_utilization between the two makes b the
    # under-used host and a a target (the power_saving balancer empties onto hosts at or above it).
    memory = min(host_a.memory_mib, host_b.memory_mib)
    low = 100.0 * 96 / memory
    cluster = _set_cluster(host_a.cluster_id, policy="power_saving", balancing_enabled=True, policy_properties={
        "low_utilization": low, "high_utilization": 80, "balancing_interval_seconds": 0})

    cluster_ops._last_balance.clear()
    done = cluster_ops.balancing_pass()
    assert list(done) == ["lab"] and len(done["lab"]) == 1, done
    [move] = done["lab"]
    assert move["vm"] == lonely.name and move["to"] == host_a.name and "error" not in move, move
    assert "vmp-hostb is under-used" in move["reason"] and "to save power" in move["reason"]
    for vm in [*on_a, lonely]:
        _assert_runs_on(vm, host_a, hv_a, ns_pair)
    assert not VM.objects.filter(host=host_b).exclude(status=VMStatus.DELETED).exists()
    assert hv_b.virsh("list", "--all", "--name").stdout.strip() == ""  # b has no domain left
    # Consolidated: a pass right after has nothing to do.
    cluster_ops._last_balance.clear()
    assert cluster_ops.balancing_pass() == {}

    # b is empty: with a power agent, power saving puts it on standby (really off: its libvirtd is gone).
    Host.objects.filter(pk=host_b.pk).update(
        power_off_command=f"{NSHOST} down {{host}}", power_on_command=f"{NSHOST} up {{host}} --addr 10.99.7.2/24")
    _set_cluster(cluster.pk, power_saving_enabled=True, policy_properties={
        **cluster.policy_properties, "low_free_memory_percent": 0, "standby_delay_seconds": 0})
    try:
        with override_settings(POWER_AGENT_TIMEOUT_SECONDS=180):
            done = cluster_ops.power_saving_pass()
        assert done == {"lab": {"standby": [host_b.name], "woken": []}}, done
        _wait(lambda: not hv_b.pids(), 30, "host b to be off")
        from portal.hypervisor import get_driver
        get_driver(hv_b.uri).close()
        host_b.refresh_from_db()
        assert host_refresh(host=host_b).status == HostStatus.STANDBY
        for vm in [*on_a, lonely]:
            _assert_runs_on(vm, host_a, hv_a, [hv_a])
    finally:
        _set_cluster(cluster.pk, power_saving_enabled=False, balancing_enabled=False)
        if not hv_b.pids():
            from tests.nshost import ns_up
            ns_up(hv_b.name, addr="10.99.7.2/24")
        register_ns_host(hv_b, cluster=host_a.cluster)
