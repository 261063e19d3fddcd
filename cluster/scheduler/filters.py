"""Built-in filters: hard rules a host must pass to take the VM. Each says why it removed a host."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cluster.choices import HostStatus

from .base import Context, Filter, HostView

if TYPE_CHECKING:
    from . import VMRequest

_STATE_WORDS = {
    HostStatus.PREPARING_FOR_MAINTENANCE: "is preparing for maintenance",
    HostStatus.MAINTENANCE: "is in maintenance",
    HostStatus.NON_RESPONSIVE: "is not responding",
    HostStatus.STANDBY: "is on standby",
    HostStatus.DOWN: "is down",
    HostStatus.UNKNOWN: "has not been reached yet",
}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class HostStateFilter(Filter):
    """Only enabled hosts that are up take VMs; the VM's current host (a migration's source) never does."""

    name = "host_state"
    description = "Host is up and enabled (and is not the VM's current host)."
    refusal = "No host is up and enabled"

    def check(self, host: HostView, request: VMRequest, ctx: Context) -> str | None:
        if request.current_host_id == host.id:
            return "is the VM's current host"
        if not host.enabled:
            return "is disabled"
        if host.status not in HostStatus.PLACEABLE:
            return _STATE_WORDS.get(host.status, f"is {host.status}")  # type: ignore[call-overload]
        return None


class AllowedHostsFilter(Filter):
    """Hosts that have what the VM needs (its networks, its storage), as the caller computed them."""

    name = "allowed_hosts"
    description = "Host has what the VM needs (networks, storage)."
    refusal = "No available host {allowed_reason}"

    def check(self, host: HostView, request: VMRequest, ctx: Context) -> str | None:
        if request.allowed_host_ids is not None and host.id not in request.allowed_host_ids:
            return f"is not one that {request.allowed_reason}" if request.allowed_reason else "lacks what the VM needs"
        return None


class PinningFilter(Filter):
    """A VM pinned to hosts runs only on them."""

    name = "pinning"
    description = "The VM is pinned to some hosts: only those."
    refusal = "None of the hosts the VM is pinned to can take it"

    def check(self, host: HostView, request: VMRequest, ctx: Context) -> str | None:
        if request.pinned_host_ids and host.id not in request.pinned_host_ids:
            return "is not one the VM is pinned to"
        return None


class RequiredTagsFilter(Filter):
    """The host carries every tag the VM requires."""

    name = "required_tags"
    description = "Host carries every tag the VM requires."
    refusal = "No host carries the tags {required_tags}"

    def check(self, host: HostView, request: VMRequest, ctx: Context) -> str | None:
        missing = request.required_tags - host.tags
        if missing:
            return f"lacks the tag{'s' if len(missing) > 1 else ''} {', '.join(sorted(missing))}"
        return None


class MemoryFilter(Filter):
    """The VM's memory fits in what the host has left: memory × memory_overcommit_percent − committed."""

    name = "memory"
    description = "Host has the VM's memory left (with the cluster's memory overcommit)."
    properties = {"memory_overcommit_percent": 100}
    refusal = "No host has {memory_mib} MiB free"

    def check(self, host: HostView, request: VMRequest, ctx: Context) -> str | None:
        if host.memory_mib <= 0:
            return "has not reported its memory"
        left = host.memory_capacity_mib(float(ctx.prop("memory_overcommit_percent", host))) - host.committed_memory_mib
        if left < request.memory_mib:
            return f"has {max(left, 0)} MiB left"
        return None


class CpuFilter(Filter):
    """The VM's vCPUs fit: no more than the host's CPUs each, and committed vCPUs ≤ CPUs × vcpu_overcommit_ratio."""

    name = "cpu"
    description = "Host has the VM's vCPUs left (CPUs × the cluster's vCPU overcommit ratio)."
    properties = {"vcpu_overcommit_ratio": 4}
    refusal = "No host has {vcpus} vCPUs free"

    def check(self, host: HostView, request: VMRequest, ctx: Context) -> str | None:
        if host.cpus <= 0:
            return "has not reported its CPUs"
        if request.vcpus > host.cpus:
            return f"has only {_plural(host.cpus, 'CPU')}"
        left = int(host.cpus * float(ctx.prop("vcpu_overcommit_ratio", host))) - host.committed_vcpus
        if left < request.vcpus:
            return f"has {_plural(max(left, 0), 'vCPU')} left"
        return None


class AffinityFilter(Filter):
    """Enforcing affinity groups: together with the group's other VMs (positive), or apart (negative)."""

    name = "affinity"
    description = "Enforcing affinity groups: with the group's other VMs, or away from them."
    refusal = "No host satisfies the VM's affinity groups"

    def check(self, host: HostView, request: VMRequest, ctx: Context) -> str | None:
        for rule in request.affinity:
            if not rule.enforcing or not rule.host_ids:
                continue
            if rule.positive and host.id not in rule.host_ids:
                return f"does not run the other VMs of affinity group {rule.group}"
            if not rule.positive and host.id in rule.host_ids:
                return f"runs another VM of anti-affinity group {rule.group}"
        return None


BUILTIN_FILTERS: tuple[type[Filter], ...] = (
    HostStateFilter, AllowedHostsFilter, PinningFilter, RequiredTagsFilter, MemoryFilter, CpuFilter, AffinityFilter)
