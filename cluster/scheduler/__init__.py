"""The Scheduler API: where a VM runs.

Placement is a pipeline: *filters* drop hosts that cannot take the VM (each says why), *weights*
rank the rest (soft preferences, lower total is better), and *balancers* propose migrations. A
cluster's policy names the filters, weights (with factors) and balancer it uses. Third parties add
their own as Python classes (settings or package entry points); see docs/scheduler.md. The plugin
interface (Filter, Weight, Balancer, HostView) is in cluster.scheduler.base.

This module is the stable surface the rest of the portal uses:
- `VMRequest` — what is being placed (built by vms, which knows VMs; cluster does not);
- `schedule()` — pick a host, with an `explanation` kept on the job;
- `propose_balancing()` — the moves a cluster's balancer proposes now.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import QuerySet

from cluster.choices import HostStatus
from cluster.models import Cluster, Host
from portal.exceptions import Conflict


@dataclass(frozen=True)
class AffinityRule:
    """An affinity group the VM is in: where the group's *other* VMs run now."""

    group: str
    positive: bool  # together (True) or apart (False)
    enforcing: bool  # a filter (True) or a weight (False)
    host_ids: frozenset[int] = frozenset()


@dataclass(frozen=True)
class VMRequest:
    """What the scheduler places: sizes and the VM's constraints."""

    vcpus: int
    memory_mib: int
    vm_id: int | None = None
    name: str = ""
    current_host_id: int | None = None  # a migration's source: never chosen, its load not counted twice
    required_tags: frozenset[str] = frozenset()
    pinned_host_ids: frozenset[int] = frozenset()  # empty: any host
    allowed_host_ids: frozenset[int] | None = None  # narrowed by what the VM needs (networks, storage)
    allowed_reason: str = ""  # why, for the refusal ("carries the network lab")
    affinity: tuple[AffinityRule, ...] = ()


@dataclass(frozen=True)
class Move:
    """A migration a balancer proposes."""

    vm_id: int
    source_host_id: int
    target_host_id: int
    reason: str


@dataclass
class Placement:
    """The chosen host and why: which hosts each filter removed, the weights, the policy."""

    host: Host
    explanation: dict[str, Any] = field(default_factory=dict)


class NoHostAvailable(Conflict):
    """No host can take the VM. The message is for everyone and names no host ("No host has 6000 MiB free;
    ask an administrator."); `hosts` says which hosts were ruled out and why ("host-a has 2048 MiB left,
    host-b is in maintenance") and `explanation` is the whole decision: both for administrators (in
    `detail`, which only staff see)."""

    def __init__(self, message: str, *, explanation: dict[str, Any] | None = None, hosts: str = "",
                 headline: str = "", **kwargs: Any) -> None:
        from .engine import explain_text

        explanation = explanation or {}
        self.hosts = hosts
        self.headline = headline or message
        if "detail" not in kwargs:
            kwargs["detail"] = "\n".join(part for part in (
                f"{self.headline}: {hosts}." if hosts else "", explain_text(explanation) if explanation else "")
                if part)
        super().__init__(message, **kwargs)
        self.explanation = explanation


def schedule(*, request: VMRequest, cluster: Cluster | None = None, exclude_host_ids: frozenset[int] = frozenset(),
             lock: bool = False, hosts: QuerySet[Host] | None = None) -> Placement:
    """The best host for `request` in `cluster` (None: every cluster), by the cluster's policy.

    `lock`: called inside the record-phase transaction; the candidate clusters' rows are locked first
    so concurrent placements see each other's VMs (never overcommitting a host).
    Raises Conflict (with the explanation's summary) when no host fits.
    """
    from .engine import run_schedule  # the pipeline; kept out of this module so importing the API is cheap

    return run_schedule(request=request, cluster=cluster, exclude_host_ids=exclude_host_ids, lock=lock,
                        hosts=hosts)


def propose_balancing(*, cluster: Cluster, recently_moved: Iterable[int] | None = None) -> list[Move]:
    """The migrations the cluster's balancer proposes now (nothing is moved here).

    `recently_moved`: VM ids the caller knows were migrated lately (never proposed again: no ping-pong),
    besides those the registry's guard finds (migration jobs within migration_guard_minutes).
    """
    from .engine import run_balance

    return run_balance(cluster=cluster, recently_moved=recently_moved)


def explain_text(explanation: dict[str, Any]) -> str:
    """A placement's explanation as a few lines of text (for the job log and administrators)."""
    from .engine import explain_text as text

    return text(explanation)


def policy_names() -> list[str]:
    """Every policy a cluster may name: the built-ins and those in settings."""
    from .registry import policy_names as names

    return names()


__all__ = ["AffinityRule", "Conflict", "HostStatus", "Move", "NoHostAvailable", "Placement", "VMRequest",
           "explain_text", "policy_names", "propose_balancing", "schedule"]
