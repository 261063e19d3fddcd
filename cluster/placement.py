"""What hosts carry, for the scheduler (cluster.scheduler): loads and the VMs placed on them.

What hosts already carry comes from the apps that place things on them: vms registers a load
provider (committed memory, vCPUs and VM count per host, one aggregate query) and a source of the
VMs on a set of hosts (for balancing), so placement stays below vms.

`pick_host` is the old first-fit-by-free-memory choice, kept for callers outside the create path;
new code calls `cluster.scheduler.schedule()`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.db.models import QuerySet

from portal.exceptions import Conflict

from .choices import HostStatus
from .models import Host


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


def pick_host(*, vcpus: int, memory_mib: int, among: QuerySet[Host] | None = None,
              why_among: str = "") -> Host:
    """The enabled, reachable host with the most memory left after what is committed on it.

    `among` narrows the choice (hosts that carry the VM's networks); `why_among` says why, for the
    refusal when none of them is available.
    """
    hosts = (among if among is not None else Host.objects.all()).filter(enabled=True).exclude(
        status__in=[HostStatus.DOWN, HostStatus.MAINTENANCE])
    loads = host_loads()
    candidates = []
    for host in hosts:
        load = loads.get(host.pk, HostLoad())
        free = (host.memory_mib or 0) - load.memory_mib
        candidates.append((free, -load.vms, -host.pk, host))
    if not candidates:
        if among is not None and why_among:
            raise Conflict(f"No available hypervisor host {why_among}; ask an administrator.")
        raise Conflict("No hypervisor host is available for new VMs; ask an administrator.")
    candidates.sort(key=lambda c: c[:3], reverse=True)
    return candidates[0][3]
