"""The plugin interface of the scheduler: `Filter`, `Weight`, `Balancer`, and what they are given.

A plugin is a plain Python class with a unique `name`, subclassing one of the three base classes
below. The engine builds one `HostView` per host (a snapshot: no ORM object, no query in a plugin),
and a `Context` with the cluster policy's properties. Plugins must be pure functions of what they
are given: they run inside the create's transaction, for every host, on every placement.

- A **filter** removes hosts that cannot take the VM: `check()` returns a reason (one short phrase
  that follows the host's name: "has 2048 MiB left", "is in maintenance") or None to keep the host.
- A **weight** ranks the hosts left: `score()` returns a number, **lower is better**, by convention
  between 0 and 100 so that a policy's factors compare like with like. The total is
  sum(factor × score) over the policy's weights; the lowest total wins (ties: the host's name).
- A **balancer** proposes migrations for a cluster: `propose()` yields `Move`s, using
  `BalanceContext.fits()` so every target passes the policy's filters, and `BalanceContext.moved()`
  to book a move (the engine then counts that VM on its target for the following proposals).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from cluster.choices import HostStatus
from cluster.placement import PlacedVM

if TYPE_CHECKING:
    from . import Move, VMRequest

# Policy properties every built-in understands, with their defaults (a cluster's policy_properties
# override them; a policy may declare its own defaults too).
DEFAULT_PROPERTIES: dict[str, Any] = {
    "high_utilization": 80,  # percent of memory committed above which a host is "over-used"
    "low_utilization": 20,  # percent below which a host is "under-used" (power saving empties it)
    "max_concurrent_migrations": 2,  # per balancing pass, per cluster
    "memory_overcommit_percent": 100,  # a host may commit this percent of its memory to VMs
    "vcpu_overcommit_ratio": 4,  # vCPUs committed per physical CPU
    "migration_guard_minutes": 10,  # a VM migrated this recently is never proposed again (ping-pong)
    "vm_count_spread": 2,  # vm_count balancer: act when the busiest host has this many more VMs than the idlest
}


@dataclass(slots=True)
class HostView:
    """A snapshot of one host for the scheduler: its facts from libvirt and what is committed on it.

    `committed_*` is what the portal's VMs hold there (every VM that still holds resources, a VM
    being migrated counting on both ends). `vms` is filled for balancing only (None when placing).
    """

    id: int
    name: str
    cluster_id: int | None
    status: str
    enabled: bool
    cpus: int
    memory_mib: int
    free_memory_mib: int
    tags: frozenset[str] = frozenset()
    committed_memory_mib: int = 0
    committed_vcpus: int = 0
    vm_count: int = 0
    cpu_usage_percent: float | None = None
    vms: list[PlacedVM] | None = None

    @property
    def placeable(self) -> bool:
        return self.enabled and self.status in HostStatus.PLACEABLE

    def memory_capacity_mib(self, overcommit_percent: float = 100) -> int:
        return int(self.memory_mib * overcommit_percent / 100)

    def memory_used_percent(self, extra_mib: int = 0) -> float:
        """Committed memory (plus `extra_mib`) as a percent of the host's physical memory."""
        if self.memory_mib <= 0:
            return 100.0
        return 100.0 * (self.committed_memory_mib + extra_mib) / self.memory_mib

    def cpu_used_percent(self, extra_vcpus: int = 0) -> float:
        """Committed vCPUs (plus `extra_vcpus`) as a percent of the physical CPUs (may exceed 100)."""
        if self.cpus <= 0:
            return 100.0
        return 100.0 * (self.committed_vcpus + extra_vcpus) / self.cpus


@dataclass
class Context:
    """What every plugin may read besides the host and the request.

    `properties`: the policy's properties as they apply to a host's cluster (`props(host)`), defaults
    filled in. `hosts`: every host in scope by id (for plugins that compare hosts).
    """

    policy: str
    properties: dict[int | None, dict[str, Any]]  # cluster id -> properties
    hosts: Mapping[int, HostView] = field(default_factory=dict)
    default_properties: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PROPERTIES))
    cache: dict[str, Any] = field(default_factory=dict)

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """A value computed once per placement (e.g. the busiest host's VM count), for weights that compare hosts."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

    def props(self, host: HostView | None = None) -> dict[str, Any]:
        if host is not None and host.cluster_id in self.properties:
            return self.properties[host.cluster_id]
        return self.default_properties

    def prop(self, name: str, host: HostView | None = None) -> Any:
        return self.props(host).get(name, DEFAULT_PROPERTIES.get(name))


class Plugin(abc.ABC):
    """What filters, weights and balancers share: a unique `name` and a one-line `description`."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    # Properties this plugin reads, with defaults (shown in the admin; validated as numbers >= 0).
    properties: ClassVar[Mapping[str, float]] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class Filter(Plugin):
    """Removes hosts that cannot take the VM (a hard rule)."""

    # The refusal's headline when this filter removed most hosts; formatted with the request's fields
    # (vcpus, memory_mib, name, allowed_reason, required_tags).
    refusal: ClassVar[str] = "No host can take this VM"

    @abc.abstractmethod
    def check(self, host: HostView, request: VMRequest, ctx: Context) -> str | None:
        """None to keep `host`; else why it cannot take the VM, as a phrase after its name."""

    def filter(self, hosts: list[HostView], request: VMRequest, ctx: Context) -> tuple[list[HostView], dict[int, str]]:
        """Hosts kept, and the removed ones' reasons by host id. Override for a vectorised check."""
        kept: list[HostView] = []
        removed: dict[int, str] = {}
        for host in hosts:
            reason = self.check(host, request, ctx)
            if reason is None:
                kept.append(host)
            else:
                removed[host.id] = reason
        return kept, removed


class Weight(Plugin):
    """Ranks the hosts left (a soft preference): lower scores are better."""

    @abc.abstractmethod
    def score(self, host: HostView, request: VMRequest, ctx: Context) -> float:
        """How much this weight dislikes putting the VM on `host` (0 best … 100 worst, by convention)."""


@dataclass
class BalanceContext(Context):
    """A balancing pass: the pass's move budget, the ping-pong guard and the target check."""

    max_moves: int = 2
    recently_moved: frozenset[int] = frozenset()
    moves: list[Move] = field(default_factory=list)
    # Set by the engine: can `host` take `vm`? None if yes, else the reason (the policy's filters).
    fit_check: Any = None

    @property
    def budget(self) -> int:
        return self.max_moves - len(self.moves)

    def movable(self, vm: PlacedVM) -> bool:
        """Not migrated recently (ping-pong guard), not already moved in this pass, not in flight."""
        return (vm.id not in self.recently_moved and not vm.migrating
                and all(m.vm_id != vm.id for m in self.moves))

    def fits(self, vm: PlacedVM, target: HostView) -> str | None:
        """None if `target` may take `vm` now (the policy's filters, loads booked so far); else why not."""
        if target.id == vm.host_id:
            return "is the VM's host"
        return self.fit_check(vm, target) if self.fit_check is not None else None

    def moved(self, vm: PlacedVM, source: HostView, target: HostView, reason: str) -> Move:
        """Book a move: the VM counts on `target`, no longer on `source`, for the rest of the pass."""
        from . import Move  # the API module imports this one: the dataclass is reached at call time

        move = Move(vm_id=vm.id, source_host_id=source.id, target_host_id=target.id, reason=reason)
        self.moves.append(move)
        source.committed_memory_mib -= vm.memory_mib
        source.committed_vcpus -= vm.vcpus
        source.vm_count -= 1
        target.committed_memory_mib += vm.memory_mib
        target.committed_vcpus += vm.vcpus
        target.vm_count += 1
        if source.vms is not None:
            source.vms = [v for v in source.vms if v.id != vm.id]
        if target.vms is not None:
            target.vms.append(vm)
        return move


class Balancer(Plugin):
    """Proposes migrations that bring a cluster closer to its policy."""

    @abc.abstractmethod
    def propose(self, hosts: list[HostView], ctx: BalanceContext) -> Iterable[Move]:
        """Moves, booked with `ctx.moved()` (which returns each); stop when `ctx.budget` reaches 0."""
