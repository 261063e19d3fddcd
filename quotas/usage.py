"""What counts against a quota, fed by the apps that own the counted things.

The quotas app knows limits, not VMs: an app that charges resources to a quota registers a
provider (vms does, in its AppConfig.ready), and `quota_usage` adds up what every provider reports.
This keeps quotas below the apps it counts, with no import upwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import Group

# The resources a quota limits, in display order: (resource, label, unit, limit field).
RESOURCES: tuple[tuple[str, str, str, str], ...] = (
    ("vms", "VMs", "", "max_vms"),
    ("vcpus", "vCPUs", "", "max_vcpus"),
    ("memory_mib", "Memory", "MiB", "max_memory_mib"),
    ("disk_gib", "Disk", "GiB", "max_disk_gib"),
    ("backup_gib", "Backup space", "GiB", "max_backup_gib"),  # backups (issue #11)
)

# provider(user=..., group=...) -> {resource: amount in use}; user for personal use, group for a team's.
UsageProvider = Callable[..., dict[str, int]]
_providers: list[UsageProvider] = []


def register_usage(provider: UsageProvider) -> UsageProvider:
    """Add a source of usage (idempotent: registering the same function twice counts it once)."""
    if provider not in _providers:
        _providers.append(provider)
    return provider


def usage_in(*, user: Any = None, group: Group | None = None) -> dict[str, int]:
    """What every registered provider charges to the user's personal quota or to the group's."""
    total = {resource: 0 for resource, *_ in RESOURCES}
    for provider in _providers:
        for resource, amount in provider(user=user, group=group).items():
            total[resource] = total.get(resource, 0) + int(amount)
    return total


@dataclass(frozen=True)
class ResourceUsage:
    """One resource of one quota: how much is used of how much."""

    resource: str
    label: str
    unit: str
    used: int
    limit: int

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    @property
    def percent(self) -> int:
        if self.limit <= 0:
            return 100
        return min(100, round(100 * self.used / self.limit))
