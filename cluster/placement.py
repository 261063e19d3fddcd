"""What hosts carry, for the scheduler (cluster.scheduler): loads and the VMs placed on them.

What hosts already carry comes from the apps that place things on them: vms registers a load
provider (committed memory, vCPUs and VM count per host, one aggregate query) and a source of the
VMs on a set of hosts (for balancing), so placement stays below vms.
Where a VM goes is `cluster.scheduler.schedule()`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class HostLoad:
    """What is already committed on a host."""

    memory_mib: int = 0
    vcpus: int = 0
    vms: int = 0


@dataclass(frozen=True, slots=True)
class PlacedVM:
    """A VM as the balancer sees it: where it is and what it holds (no ORM object)."""

    id: int
    host_id: int
    memory_mib: int
    vcpus: int
    name: str = ""
    migrating: bool = False  # a migration is under way: never proposed again


# provider() -> {host id: HostLoad}
LoadProvider = Callable[[], dict[int, HostLoad]]
_load_providers: list[LoadProvider] = []


def register_load(provider: LoadProvider) -> None:
    """Add a source of committed load per host (once)."""
    if provider not in _load_providers:
        _load_providers.append(provider)


# provider(host ids) -> the VMs on those hosts that still hold resources
PlacedVMsProvider = Callable[[Iterable[int]], list[PlacedVM]]
_placed_providers: list[PlacedVMsProvider] = []


def register_placed_vms(provider: PlacedVMsProvider) -> None:
    """Add a source of the VMs on a set of hosts (once): the balancers move them."""
    if provider not in _placed_providers:
        _placed_providers.append(provider)


def placed_vms(host_ids: Iterable[int]) -> list[PlacedVM]:
    ids = list(host_ids)
    return [vm for provider in _placed_providers for vm in provider(ids)]


def host_loads() -> dict[int, HostLoad]:
    """Committed load per host id, summed over every provider."""
    parts = [loads for loads in (provider() for provider in _load_providers) if loads]
    if not parts:
        return {}
    parts.sort(key=len, reverse=True)
    total = dict(parts[0])  # the biggest as it is; the others (usually a few migrating VMs) added to it
    for loads in parts[1:]:
        for host_id, load in loads.items():
            was = total.get(host_id)
            total[host_id] = load if was is None else HostLoad(
                was.memory_mib + load.memory_mib, was.vcpus + load.vcpus, was.vms + load.vms)
    return total
