"""Policies: a named list of filters, weights with factors, and one balancer.

Built-ins are below; settings.SCHEDULER_POLICIES (env PORTAL_SCHEDULER_POLICIES: JSON, or @/path/to/file.json) adds or replaces policies by name, e.g.

    PORTAL_SCHEDULER_POLICIES = {
        "gpu_first": {
            "description": "Evenly distributed, GPU hosts preferred",
            "filters": ["host_state", "allowed_hosts", "pinning", "required_tags", "memory", "cpu", "affinity"],
            "weights": {"memory_load": 1, "gpu_free": 5},
            "balancer": "evenly_distributed",
            "properties": {"high_utilization": 70},
        },
    }

Names refer to filters, weights and balancers in the registry (built-ins and plugins).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

HARD_FILTERS = ("host_state", "allowed_hosts", "pinning", "required_tags", "memory", "cpu", "affinity")


@dataclass(frozen=True)
class Policy:
    name: str
    description: str = ""
    filters: tuple[str, ...] = HARD_FILTERS
    weights: tuple[tuple[str, float], ...] = ()  # (weight name, factor)
    balancer: str = "none"
    properties: Mapping[str, Any] = field(default_factory=dict)  # defaults for this policy

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> Policy:
        weights = data.get("weights", {})
        if isinstance(weights, Mapping):
            pairs = tuple((str(k), float(v)) for k, v in weights.items())
        else:  # a list of names, or of (name, factor)
            pairs = tuple((str(w), 1.0) if isinstance(w, str) else (str(w[0]), float(w[1])) for w in weights)
        return cls(name=name, description=str(data.get("description", "")),
                   filters=tuple(data.get("filters", HARD_FILTERS)), weights=pairs,
                   balancer=str(data.get("balancer", "none")), properties=dict(data.get("properties", {})))


BUILTIN_POLICIES: dict[str, Policy] = {p.name: p for p in (
    Policy("none", "First fit: the hard rules only, no preference, no balancing.",
           weights=(("none", 1.0),), balancer="none"),
    Policy("evenly_distributed", "Spread VMs: the least used host (memory, then CPU); the balancer moves VMs off "
                                 "hosts above high_utilization.",
           weights=(("memory_load", 1.0), ("cpu_load", 0.5), ("affinity", 10.0), ("recent_failures", 2.0)),
           balancer="evenly_distributed"),
    Policy("power_saving", "Pack VMs onto few hosts below high_utilization; the balancer empties hosts below "
                           "low_utilization so they can go to standby.",
           weights=(("power_saving", 1.0), ("affinity", 10.0), ("recent_failures", 2.0)), balancer="power_saving"),
    Policy("vm_count", "The same number of VMs on every host; the balancer evens the counts out.",
           weights=(("vm_count", 1.0), ("memory_load", 0.1), ("affinity", 10.0), ("recent_failures", 2.0)),
           balancer="vm_count",
           properties={"vm_count_spread": 2}),
)}
