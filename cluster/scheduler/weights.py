"""Built-in weights: soft preferences among the hosts the filters kept. Lower scores are better (0–100)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Context, HostView, Weight

if TYPE_CHECKING:
    from . import VMRequest


class MemoryLoadWeight(Weight):
    """Evenly distributed: the host with the least memory committed (after placing the VM) wins."""

    name = "memory_load"
    description = "Prefer the host with the least memory committed."

    def score(self, host: HostView, request: VMRequest, ctx: Context) -> float:
        return min(100.0, host.memory_used_percent(request.memory_mib))


class CpuLoadWeight(Weight):
    """Evenly distributed: the host with the least CPU load wins (measured usage when known, else
    committed vCPUs per CPU)."""

    name = "cpu_load"
    description = "Prefer the host with the least CPU load."

    def score(self, host: HostView, request: VMRequest, ctx: Context) -> float:
        committed = host.cpu_used_percent(request.vcpus) / max(1.0, float(ctx.prop("vcpu_overcommit_ratio", host)))
        measured = host.cpu_usage_percent if host.cpu_usage_percent is not None else 0.0
        return min(100.0, max(committed, measured))


class PowerSavingWeight(Weight):
    """Power saving: the busiest host that stays below high_utilization after placing the VM wins, so VMs
    pack onto few hosts and the others can empty (and go to standby). Hosts that would cross the
    threshold come last, least used first."""

    name = "power_saving"
    description = "Prefer the most used host that stays below the high utilization threshold."
    properties = {"high_utilization": 80}

    def score(self, host: HostView, request: VMRequest, ctx: Context) -> float:
        used = host.memory_used_percent(request.memory_mib)
        high = float(ctx.prop("high_utilization", host))
        if used <= high:
            return max(0.0, 50.0 - used / 2)  # 0..50: fuller is better
        return min(100.0, 50.0 + used / 2)  # 50..100: over the threshold, emptier is better


class VMCountWeight(Weight):
    """VM count: the host running the fewest VMs wins (relative to the busiest host in scope)."""

    name = "vm_count"
    description = "Prefer the host with the fewest VMs."

    def score(self, host: HostView, request: VMRequest, ctx: Context) -> float:
        busiest = ctx.memo("vm_count.busiest", lambda: max((h.vm_count for h in ctx.hosts.values()), default=0))
        return 100.0 * host.vm_count / busiest if busiest else 0.0


class AffinityWeight(Weight):
    """Non-enforcing affinity groups: near the group's other VMs (positive) or away from them (negative)."""

    name = "affinity"
    description = "Non-enforcing affinity groups: prefer hosts that honour them."

    def score(self, host: HostView, request: VMRequest, ctx: Context) -> float:
        rules = [r for r in request.affinity if not r.enforcing and r.host_ids]
        if not rules:
            return 0.0
        broken = sum(1 for r in rules if (host.id in r.host_ids) != r.positive)
        return 100.0 * broken / len(rules)


class RecentFailuresWeight(Weight):
    """Hosts where creates failed lately for a host reason (libvirt refused to define or start the VM, a
    volume could not be made, the host did not answer) come last: a host that keeps failing would
    otherwise look emptiest and attract every create. 50 per failure in the window
    (settings.HOST_FAILURE_WINDOW_SECONDS), at most 100. The counts come from the providers registered
    with `registry.register_host_failures` (one query per placement)."""

    name = "recent_failures"
    description = "Avoid hosts where creates failed recently (host reasons)."

    def score(self, host: HostView, request: VMRequest, ctx: Context) -> float:
        from .registry import host_failures  # the registry imports this module

        failures = ctx.memo("recent_failures", host_failures)
        return min(100.0, 50.0 * failures.get(host.id, 0))


class FirstFitWeight(Weight):
    """None policy: no preference (the host's name decides, for a stable answer)."""

    name = "none"
    description = "No preference."

    def score(self, host: HostView, request: VMRequest, ctx: Context) -> float:
        return 0.0


BUILTIN_WEIGHTS: tuple[type[Weight], ...] = (
    MemoryLoadWeight, CpuLoadWeight, PowerSavingWeight, VMCountWeight, AffinityWeight, RecentFailuresWeight,
    FirstFitWeight)
