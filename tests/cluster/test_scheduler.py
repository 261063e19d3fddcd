"""The Scheduler API on synthetic clusters: plain Host rows with facts set by the test (no libvirt is called
for pure scheduling), VMs as rows holding memory on them."""

from __future__ import annotations

import itertools

import pytest
from django.core import checks
from django.test import override_settings

from cluster.models import Cluster, Host
from cluster.scheduler import (
    AffinityRule,
    NoHostAvailable,
    VMRequest,
    explain_text,
    policy_names,
    propose_balancing,
    schedule,
)
from cluster.scheduler import registry as scheduler_registry
from cluster.scheduler.base import Context, Filter, HostView, Weight
from cluster.scheduler.engine import MAX_NAMES
from vms.choices import VMStatus
from vms.models import VM

pytestmark = pytest.mark.django_db

_seq = itertools.count()


@pytest.fixture(autouse=True)
def _fresh_registry():
    scheduler_registry.reload()
    yield
    scheduler_registry.reload()


@pytest.fixture
def lab(db):
    return Cluster.objects.create(name="lab-sched", policy="evenly_distributed")


@pytest.fixture
def host(lab):
    def make(name: str, *, memory: int = 8192, cpus: int = 4, status: str = "up", enabled: bool = True,
             tags: list[str] | None = None, cluster: Cluster | None = None) -> Host:
        return Host.objects.create(name=name, uri=f"test:///synthetic/{name}-{next(_seq)}", status=status,
                                   enabled=enabled, memory_mib=memory, free_memory_mib=memory, cpus=cpus,
                                   tags=tags or [], cluster=cluster or lab)
    return make


@pytest.fixture
def vm_on(make_user):
    owner = make_user("sched-owner")

    def make(host: Host, memory: int = 1024, vcpus: int = 1, status: str = VMStatus.RUNNING) -> VM:
        n = next(_seq)
        return VM.objects.create(name=f"vm-{n}", owner=owner, host=host, vcpus=vcpus, memory_mib=memory,
                                 disk_gib=1, status=status)
    return make


def _req(memory: int = 1024, vcpus: int = 1, **kw) -> VMRequest:
    return VMRequest(vcpus=vcpus, memory_mib=memory, name=kw.pop("name", "new"), **kw)


def _removed(explanation: dict, filter_name: str) -> dict[str, str]:
    return next(f["removed"] for f in explanation["filters"] if f["name"] == filter_name)


# --- filters ---------------------------------------------------------------------------------------

def test_memory_filter_removes_a_host_without_room_and_says_how_much_is_left(lab, host, vm_on):
    a, b = host("host-a", memory=4096), host("host-b", memory=8192)
    vm_on(a, memory=3000)
    placement = schedule(request=_req(2048), cluster=lab)
    assert placement.host == b
    assert _removed(placement.explanation, "memory") == {"host-a": "has 1096 MiB left"}
    assert placement.explanation["chosen"] == "host-b"
    assert placement.explanation["candidates"] == 1


def test_memory_overcommit_percent_from_the_clusters_properties(lab, host, vm_on):
    a = host("host-a", memory=4096)
    vm_on(a, memory=3000)
    with pytest.raises(NoHostAvailable):
        schedule(request=_req(2048), cluster=lab)
    lab.policy_properties = {"memory_overcommit_percent": 150}
    lab.save()
    assert schedule(request=_req(2048), cluster=lab).host == a  # 6144 - 3000 = 3144 left


def test_cpu_filter_per_vm_and_with_the_overcommit_ratio(lab, host, vm_on):
    small, big = host("small", cpus=2), host("big", cpus=8)
    placement = schedule(request=_req(vcpus=4), cluster=lab)
    assert placement.host == big
    assert _removed(placement.explanation, "cpu") == {"small": "has only 2 CPUs"}
    lab.policy_properties = {"vcpu_overcommit_ratio": 1}
    lab.save()
    vm_on(big, vcpus=6)
    with pytest.raises(NoHostAvailable) as caught:
        schedule(request=_req(vcpus=4), cluster=lab)
    assert str(caught.value) == "No host has 4 vCPUs free; ask an administrator."
    assert caught.value.hosts == "big has 2 vCPUs left, small has only 2 CPUs"
    assert small.pk  # (both named in the refusal)


def test_host_state_filter_keeps_only_enabled_hosts_that_are_up(lab, host):
    host("down-host", status="down")
    host("maint", status="maintenance")
    host("off", enabled=False)
    up = host("up-host")
    placement = schedule(request=_req(), cluster=lab)
    assert placement.host == up
    assert _removed(placement.explanation, "host_state") == {
        "down-host": "is down", "maint": "is in maintenance", "off": "is disabled"}


def test_a_migration_never_lands_on_its_source(lab, host):
    a, b = host("a"), host("b")
    assert schedule(request=_req(current_host_id=a.pk), cluster=lab).host == b
    assert schedule(request=_req(), cluster=lab, exclude_host_ids=frozenset({a.pk})).host == b


def test_required_tags_filter(lab, host):
    host("plain", memory=16384)
    ssd = host("fast", tags=["ssd", "gpu"])
    placement = schedule(request=_req(required_tags=frozenset({"ssd"})), cluster=lab)
    assert placement.host == ssd
    assert _removed(placement.explanation, "required_tags") == {"plain": "lacks the tag ssd"}
    with pytest.raises(NoHostAvailable, match="No host carries the tags nvme, ssd"):
        schedule(request=_req(required_tags=frozenset({"ssd", "nvme"})), cluster=lab)


def test_pinning_filter(lab, host):
    host("a", memory=16384)
    b = host("b")
    placement = schedule(request=_req(pinned_host_ids=frozenset({b.pk})), cluster=lab)
    assert placement.host == b
    assert _removed(placement.explanation, "pinning") == {"a": "is not one the VM is pinned to"}


def test_allowed_hosts_filter_says_what_the_vm_needs(lab, host):
    a, b = host("a", memory=16384), host("b")
    placement = schedule(request=_req(allowed_host_ids=frozenset({b.pk}), allowed_reason="carries the network lab"),
                         cluster=lab)
    assert placement.host == b
    assert _removed(placement.explanation, "allowed_hosts") == {"a": "is not one that carries the network lab"}
    with pytest.raises(NoHostAvailable) as caught:
        schedule(request=_req(allowed_host_ids=frozenset(), allowed_reason="carries the network lab"), cluster=lab)
    assert str(caught.value) == "No available host carries the network lab; ask an administrator."
    assert caught.value.hosts.startswith("a is not one that")
    assert a.pk


def test_enforcing_affinity_and_anti_affinity(lab, host):
    a, b, c = host("a", memory=16384), host("b"), host("c")
    together = AffinityRule(group="web", positive=True, enforcing=True, host_ids=frozenset({c.pk}))
    assert schedule(request=_req(affinity=(together,)), cluster=lab).host == c
    apart = AffinityRule(group="db", positive=False, enforcing=True, host_ids=frozenset({a.pk}))
    placement = schedule(request=_req(affinity=(apart,)), cluster=lab)
    assert placement.host == b
    assert _removed(placement.explanation, "affinity") == {"a": "runs another VM of anti-affinity group db"}


# --- weights and policies ------------------------------------------------------------------------

def test_non_enforcing_affinity_is_a_preference(lab, host, vm_on):
    a, b = host("a"), host("b")
    vm_on(b, memory=2048)  # b is busier, but the group's VMs are there
    rule = AffinityRule(group="pair", positive=True, enforcing=False, host_ids=frozenset({b.pk}))
    placement = schedule(request=_req(affinity=(rule,)), cluster=lab)
    assert placement.host == b
    assert placement.explanation["weights"]["a"]["affinity"] == 100
    assert placement.explanation["weights"]["b"]["affinity"] == 0
    assert schedule(request=_req(), cluster=lab).host == a  # without the group: the least used


def test_evenly_distributed_picks_the_least_used_host(lab, host, vm_on):
    a, b, c = host("a"), host("b"), host("c")
    vm_on(a, memory=4096)
    vm_on(b, memory=1024)
    vm_on(c, memory=2048)
    placement = schedule(request=_req(512), cluster=lab)
    assert placement.host == b
    weights = placement.explanation["weights"]
    assert list(weights) == ["b", "c", "a"]  # best first
    assert weights["b"]["total"] < weights["c"]["total"] < weights["a"]["total"]
    assert set(weights["b"]) == {"memory_load", "cpu_load", "affinity", "recent_failures", "total"}
    assert placement.explanation["reason"].startswith("b: least used of 3 hosts that fit")


def test_power_saving_packs_onto_the_busiest_host_below_the_threshold(lab, host, vm_on):
    lab.policy = "power_saving"
    lab.save()
    a, b, c = host("a"), host("b"), host("c")
    vm_on(a, memory=7000)  # 85% + the VM: above the 80% threshold
    vm_on(b, memory=4096)
    assert schedule(request=_req(512), cluster=lab).host == b
    assert c.pk


def test_vm_count_picks_the_host_with_fewest_vms(lab, host, vm_on):
    lab.policy = "vm_count"
    lab.save()
    a, b = host("a"), host("b")
    for _ in range(3):
        vm_on(a, memory=100)
    vm_on(b, memory=4096)
    vm_on(b, memory=2048)
    assert schedule(request=_req(512), cluster=lab).host == b


def test_none_policy_is_first_fit_by_name(lab, host, vm_on):
    lab.policy = "none"
    lab.save()
    busy, idle = host("alpha"), host("beta")
    vm_on(busy, memory=6000)
    assert schedule(request=_req(512), cluster=lab).host == busy
    assert idle.pk


def test_policy_names_include_the_built_ins():
    assert {"none", "evenly_distributed", "power_saving", "vm_count"} <= set(policy_names())


# --- the refusal and the explanation ------------------------------------------------------------

def test_refusal_says_why_in_one_sentence_and_carries_the_explanation(lab, host, vm_on):
    a = host("host-a", memory=4096)
    host("host-b", status="maintenance")
    vm_on(a, memory=2048)
    with pytest.raises(NoHostAvailable) as caught:
        schedule(request=_req(6000, name="big"), cluster=lab)
    exc = caught.value
    assert str(exc) == "No host has 6000 MiB free; ask an administrator."  # users see no host
    assert exc.hosts == "host-a has 2048 MiB left, host-b is in maintenance"  # administrators do (detail)
    assert "host-a has 2048 MiB left" in exc.detail
    assert exc.code == "conflict" and exc.http_status == 409
    assert exc.explanation["chosen"] is None
    assert exc.explanation["request"] == {"vcpus": 1, "memory_mib": 6000, "name": "big"}
    assert _removed(exc.explanation, "host_state") == {"host-b": "is in maintenance"}
    assert "Filter memory removed 1: host-a has 2048 MiB left." in exc.detail  # for administrators


def test_refusal_without_any_host(lab):
    with pytest.raises(NoHostAvailable, match="No hypervisor host is registered in cluster lab-sched"):
        schedule(request=_req(), cluster=lab)


def test_explanation_is_capped_for_many_hosts(lab, host):
    for i in range(MAX_NAMES + 15):
        host(f"tiny-{i:02}", memory=512 + i)
    ok = host("roomy", memory=65536)
    placement = schedule(request=_req(4096), cluster=lab)
    assert placement.host == ok
    memory = next(f for f in placement.explanation["filters"] if f["name"] == "memory")
    assert len(memory["removed"]) == MAX_NAMES
    assert memory["count"] == MAX_NAMES + 15 and memory["more"] == 15
    assert memory["reasons"] == {"has N MiB left": MAX_NAMES + 15}
    with pytest.raises(NoHostAvailable) as caught:
        schedule(request=_req(4096), cluster=lab, exclude_host_ids=frozenset({ok.pk}))
    assert caught.value.hosts.endswith(", and 31 more")
    text = explain_text(placement.explanation)
    assert "Chosen roomy" in text and "and 15 more" in text


# --- balancers --------------------------------------------------------------------------------------

def test_evenly_distributed_balancer_moves_off_an_over_used_host(lab, host, vm_on):
    hot, warm, cold = host("hot"), host("warm"), host("cold")
    big = vm_on(hot, memory=4096)
    vm_on(hot, memory=3000)  # 87%
    vm_on(warm, memory=4000)
    moves = propose_balancing(cluster=lab)
    assert len(moves) == 1
    move = moves[0]
    assert (move.source_host_id, move.target_host_id) == (hot.pk, cold.pk)
    assert move.vm_id in (big.pk, big.pk + 1)
    assert "hot has 87% of its memory committed (above 80%)" in move.reason


def test_balancer_respects_max_migrations_and_the_ping_pong_guard(lab, host, vm_on):
    hosts = [host(f"hot-{i}") for i in range(3)]
    host("cold-1", memory=65536)
    vms = [vm_on(h, memory=7500) for h in hosts]
    assert len(propose_balancing(cluster=lab)) == 2  # max_concurrent_migrations by default
    lab.policy_properties = {"max_concurrent_migrations": 5}
    lab.save()
    moves = propose_balancing(cluster=lab)
    assert {m.vm_id for m in moves} == {v.pk for v in vms}
    moves = propose_balancing(cluster=lab, recently_moved=[vms[0].pk])
    assert {m.vm_id for m in moves} == {vms[1].pk, vms[2].pk}
    # A migration under way counts against the budget and is never proposed.
    VM.objects.filter(pk=vms[1].pk).update(status=VMStatus.MIGRATING)
    lab.policy_properties = {"max_concurrent_migrations": 2}
    lab.save()
    moves = propose_balancing(cluster=lab)
    assert len(moves) == 1 and moves[0].vm_id != vms[1].pk


def test_balancer_never_overcommits_the_target(lab, host, vm_on):
    hot = host("hot")
    other = host("other", memory=4096)
    vm_on(hot, memory=7500)
    vm_on(other, memory=3000)  # the VM would not fit there
    assert propose_balancing(cluster=lab) == []


def test_power_saving_balancer_empties_an_under_used_host(lab, host, vm_on):
    lab.policy = "power_saving"
    lab.save()
    busy, idle = host("busy"), host("idle")
    vm_on(busy, memory=4096)
    small = vm_on(idle, memory=512)  # 6%: below low_utilization
    moves = propose_balancing(cluster=lab)
    assert [(m.vm_id, m.source_host_id, m.target_host_id) for m in moves] == [(small.pk, idle.pk, busy.pk)]
    assert "under-used" in moves[0].reason


def test_vm_count_balancer_evens_out_counts(lab, host, vm_on):
    lab.policy = "vm_count"
    lab.save()
    many, few = host("many"), host("few")
    for _ in range(5):
        vm_on(many, memory=100)
    lab.policy_properties = {"max_concurrent_migrations": 5}
    lab.save()
    moves = propose_balancing(cluster=lab)
    # 5 vs 0 → 4 vs 1 → 3 vs 2: then within the spread of 2, whatever the budget.
    assert [m.target_host_id for m in moves] == [few.pk, few.pk]
    assert moves[0].reason == "many runs 5 VMs, few 0: more than 2 apart"


def test_none_policy_never_balances(lab, host, vm_on):
    lab.policy = "none"
    lab.save()
    hot = host("hot")
    host("cold")
    vm_on(hot, memory=8000)
    assert propose_balancing(cluster=lab) == []


# --- plugins ---------------------------------------------------------------------------------------

class EvenIdFilter(Filter):
    """Test plugin: only hosts whose name ends in an even digit."""

    name = "even_hosts"
    refusal = "No even host"

    def check(self, host: HostView, request: VMRequest, ctx: Context) -> str | None:
        return None if int(host.name[-1]) % 2 == 0 else "is odd"


class HighestNameWeight(Weight):
    """Test plugin: prefer the host whose name sorts last."""

    name = "last_name"

    def score(self, host: HostView, request: VMRequest, ctx: Context) -> float:
        return -float(int(host.name[-1]))


class ClashingFilter(EvenIdFilter):
    name = "memory"  # a built-in's name


CUSTOM_POLICY = {"custom": {"filters": ["host_state", "memory", "even_hosts"], "weights": {"last_name": 1},
                            "balancer": "none"}}


@override_settings(SCHEDULER_PLUGINS=["tests.cluster.test_scheduler.EvenIdFilter",
                                             "tests.cluster.test_scheduler.HighestNameWeight"],
                   SCHEDULER_POLICIES=CUSTOM_POLICY)
def test_a_plugin_registered_by_settings_is_used_by_a_policy(lab, host):
    scheduler_registry.reload()
    for i in range(1, 6):
        host(f"node{i}")
    lab.policy = "custom"
    lab.save()
    placement = schedule(request=_req(), cluster=lab)
    assert placement.host.name == "node4"  # even, and the last of node2/node4
    assert _removed(placement.explanation, "even_hosts") == {"node1": "is odd", "node3": "is odd", "node5": "is odd"}
    assert placement.explanation["weights"]["node4"] == {"last_name": -4.0, "total": -4.0}
    assert "custom" in policy_names()
    assert scheduler_registry.check_scheduler_plugins() == []


@override_settings(SCHEDULER_PLUGINS=["tests.cluster.test_scheduler.ClashingFilter", "no.such.Plugin"],
                   SCHEDULER_POLICIES={"broken": {"filters": ["memory", "nope"], "balancer": "none"}})
def test_a_name_clash_or_a_bad_path_is_a_start_up_error():
    found = {(m.id, m.level) for m in scheduler_registry.check_scheduler_plugins()}
    assert ("scheduler.E001", checks.ERROR) in found
    assert ("scheduler.E002", checks.ERROR) in found
    assert ("scheduler.E003", checks.ERROR) in found
    messages = " ".join(m.msg for m in scheduler_registry.check_scheduler_plugins())
    assert "filter name 'memory' is taken twice" in messages
    assert "unknown filter 'nope'" in messages
