"""Built-in balancers: the migrations a cluster's policy proposes.

Every move goes through `BalanceContext.fits()` (the policy's filters against the loads booked so far,
so a target is never overcommitted) and `BalanceContext.moved()`; VMs migrated recently (ping-pong
guard) or already migrating are never proposed; a pass stops at max_concurrent_migrations.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from cluster.placement import PlacedVM

from .base import BalanceContext, Balancer, HostView

# How many targets a balancer tries per VM, and VMs per source host: a pass over 1,000 hosts stays cheap.
MAX_TARGETS_TRIED = 25
MAX_VMS_TRIED = 10


def _movable(host: HostView, ctx: BalanceContext) -> list[PlacedVM]:
    return [vm for vm in (host.vms or []) if ctx.movable(vm)]


def _first_fit(vm: PlacedVM, targets: Iterable[HostView], ctx: BalanceContext,
               stays_below: float | None = None) -> HostView | None:
    for tried, target in enumerate(targets):
        if tried >= MAX_TARGETS_TRIED:
            return None
        if stays_below is not None and target.memory_used_percent(vm.memory_mib) > stays_below:
            continue
        if ctx.fits(vm, target) is None:
            return target
    return None


class EvenlyDistributedBalancer(Balancer):
    """Move a VM off each host above high_utilization (memory committed) to the least used host that takes it
    and stays below the threshold."""

    name = "evenly_distributed"
    description = "Move VMs off hosts above the high utilization threshold to the least used hosts."
    properties = {"high_utilization": 80, "max_concurrent_migrations": 2}

    def propose(self, hosts: list[HostView], ctx: BalanceContext) -> Iterator:
        high = float(ctx.prop("high_utilization"))
        while ctx.budget > 0:
            over = sorted((h for h in hosts if h.memory_used_percent() > high and h.vms),
                          key=lambda h: -h.memory_used_percent())
            progressed = False
            for source in over:
                targets = sorted((h for h in hosts if h.placeable and h.id != source.id),
                                 key=lambda h: (h.memory_used_percent(), h.name))
                # The smallest VM that brings the host under the threshold, else the largest one.
                vms = sorted(_movable(source, ctx), key=lambda v: v.memory_mib)
                excess = source.committed_memory_mib - source.memory_mib * high / 100
                enough = [v for v in vms if v.memory_mib >= excess]
                order = (enough + [v for v in reversed(vms) if v not in enough])[:MAX_VMS_TRIED]
                for vm in order:
                    target = _first_fit(vm, targets, ctx, stays_below=high)
                    if target is not None:
                        was = source.memory_used_percent()
                        yield ctx.moved(vm, source, target,
                                        f"{source.name} has {was:.0f}% of its memory committed (above {high:.0f}%); "
                                        f"{target.name} is the least used host that takes {vm.name or vm.id}")
                        progressed = True
                        break
                if ctx.budget <= 0:
                    return
                if progressed:
                    break  # re-sort: the loads changed
            if not progressed:
                return


class PowerSavingBalancer(Balancer):
    """Empty hosts below low_utilization by moving their VMs to the busiest hosts that stay below
    high_utilization (an empty host may then go to standby); also relieve hosts above high_utilization."""

    name = "power_saving"
    description = "Empty under-used hosts onto the busiest hosts that stay below the high threshold."
    properties = {"low_utilization": 20, "high_utilization": 80, "max_concurrent_migrations": 2}

    def propose(self, hosts: list[HostView], ctx: BalanceContext) -> Iterator:
        high = float(ctx.prop("high_utilization"))
        low = float(ctx.prop("low_utilization"))
        # Over-used hosts first: the same rule as evenly distributed, towards the fullest host that stays below.
        yield from self._relieve(hosts, ctx, high)
        # Then empty the least used of the under-used hosts, one at a time, so a host reaches zero VMs.
        under = sorted((h for h in hosts if h.vms and h.memory_used_percent() < low),
                       key=lambda h: (h.memory_used_percent(), h.name))
        for source in under:
            if ctx.budget <= 0:
                return
            targets = sorted((h for h in hosts if h.placeable and h.id != source.id and h.vm_count > 0
                              and h.memory_used_percent() >= low), key=lambda h: (-h.memory_used_percent(), h.name))
            for vm in sorted(_movable(source, ctx), key=lambda v: -v.memory_mib)[:MAX_VMS_TRIED]:
                if ctx.budget <= 0:
                    return
                target = _first_fit(vm, targets, ctx, stays_below=high)
                if target is not None:
                    yield ctx.moved(vm, source, target,
                                    f"{source.name} is under-used ({source.memory_used_percent():.0f}% of its memory "
                                    f"committed, below {low:.0f}%): emptying it onto {target.name} to save power")
            if ctx.moves:
                return  # one host emptied at a time: the next pass continues it

    def _relieve(self, hosts: list[HostView], ctx: BalanceContext, high: float) -> Iterator:
        for source in sorted((h for h in hosts if h.memory_used_percent() > high and h.vms),
                             key=lambda h: -h.memory_used_percent()):
            if ctx.budget <= 0:
                return
            targets = sorted((h for h in hosts if h.placeable and h.id != source.id),
                             key=lambda h: (-h.memory_used_percent(), h.name))
            for vm in sorted(_movable(source, ctx), key=lambda v: v.memory_mib)[:MAX_VMS_TRIED]:
                target = _first_fit(vm, targets, ctx, stays_below=high)
                if target is not None:
                    yield ctx.moved(vm, source, target,
                                    f"{source.name} is above {high:.0f}% of its memory committed; {target.name} "
                                    "takes the VM and stays below it")
                    break


class VMCountBalancer(Balancer):
    """Move a VM from the host with the most VMs to the one with the fewest while they differ by more than
    vm_count_spread."""

    name = "vm_count"
    description = "Even out the number of VMs per host."
    properties = {"vm_count_spread": 2, "max_concurrent_migrations": 2}

    def propose(self, hosts: list[HostView], ctx: BalanceContext) -> Iterator:
        spread = int(ctx.prop("vm_count_spread"))
        placeable = [h for h in hosts if h.placeable]
        while ctx.budget > 0 and placeable:
            busiest = sorted((h for h in hosts if h.vms), key=lambda h: (-h.vm_count, h.name))
            moved = False
            for source in busiest[:MAX_TARGETS_TRIED]:
                targets = sorted((h for h in placeable if h.vm_count + spread < source.vm_count),
                                 key=lambda h: (h.vm_count, h.name))
                if not targets:
                    continue
                for vm in sorted(_movable(source, ctx), key=lambda v: v.memory_mib)[:MAX_VMS_TRIED]:
                    target = _first_fit(vm, targets, ctx)
                    if target is not None:
                        yield ctx.moved(vm, source, target,
                                        f"{source.name} runs {source.vm_count} VMs, {target.name} {target.vm_count}: "
                                        f"more than {spread} apart")
                        moved = True
                        break
                if moved:
                    break
            if not moved:
                return


class NoBalancer(Balancer):
    """Never proposes anything (the none policy)."""

    name = "none"
    description = "No balancing."

    def propose(self, hosts: list[HostView], ctx: BalanceContext) -> Iterator:
        return iter(())


BUILTIN_BALANCERS: tuple[type[Balancer], ...] = (
    EvenlyDistributedBalancer, PowerSavingBalancer, VMCountBalancer, NoBalancer)
