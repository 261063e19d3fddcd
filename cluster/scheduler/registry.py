"""Where the scheduler finds its filters, weights, balancers and policies.

Sources, in order: the built-ins; classes named in settings.SCHEDULER_PLUGINS (env PORTAL_SCHEDULER_PLUGINS) (dotted paths);
classes advertised by installed packages under the entry point group "vmportal.scheduler". Two
plugins of one kind with one name are an error, reported at start-up by a system check
(`scheduler.E001`), as is a path that does not import (`scheduler.E002`) or a policy naming something
unknown (`scheduler.E003`). Policies: the built-ins, then settings.SCHEDULER_POLICIES (env PORTAL_SCHEDULER_POLICIES).

Hooks the apps above register (cluster does not import them):
- `register_request_builder(fn)`: fn(vm_ids) -> {vm id: VMRequest}, so balancing honours each VM's
  pinning, tags and affinity (vms registers `vms.scheduling.vm_requests`);
- `register_recent_moves(fn)`: fn(minutes) -> ids of VMs migrated that recently (the ping-pong guard;
  the default reads the portal's "vm.migrate" jobs);
- `register_host_failures(fn)`: fn(seconds) -> {host id: creates that failed there for a host reason that
  recently} (the `recent_failures` weight; vms registers one aggregate over its create jobs).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import metadata
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core import checks
from django.utils import timezone

from portal.models import Job

from .balancers import BUILTIN_BALANCERS
from .base import Balancer, Filter, Plugin, Weight
from .filters import BUILTIN_FILTERS
from .policies import BUILTIN_POLICIES, Policy
from .weights import BUILTIN_WEIGHTS

if TYPE_CHECKING:
    from . import VMRequest

ENTRY_POINT_GROUP = "vmportal.scheduler"
KINDS: dict[str, type[Plugin]] = {"filter": Filter, "weight": Weight, "balancer": Balancer}


class RegistryError(Exception):
    """A plugin or policy that cannot be used: a clash, an import failure, an unknown name."""


@dataclass
class Registry:
    filters: dict[str, Filter] = field(default_factory=dict)
    weights: dict[str, Weight] = field(default_factory=dict)
    balancers: dict[str, Balancer] = field(default_factory=dict)
    policies: dict[str, Policy] = field(default_factory=dict)
    origins: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, name) -> where it came from
    errors: list[str] = field(default_factory=list)

    def table(self, kind: str) -> dict[str, Any]:
        tables: dict[str, dict[str, Any]] = {"filter": self.filters, "weight": self.weights,
                                             "balancer": self.balancers}
        return tables[kind]

    def add(self, cls: type, origin: str) -> None:
        kind = next((k for k, base in KINDS.items() if isinstance(cls, type) and issubclass(cls, base)), None)
        if kind is None:
            self.errors.append(f"{origin}: {cls!r} is not a Filter, Weight or Balancer subclass")
            return
        name = getattr(cls, "name", "")
        if not isinstance(name, str) or not name:
            self.errors.append(f"{origin}: {cls.__name__} has no name")
            return
        was = self.origins.get((kind, name))
        if was is not None and was != origin:
            self.errors.append(f"{kind} name {name!r} is taken twice: by {was} and by {origin}")
            return
        try:
            self.table(kind)[name] = cls()
        except Exception as exc:  # a plugin's constructor is third-party code
            self.errors.append(f"{origin}: {cls.__name__}() failed: {exc}")
            return
        self.origins[(kind, name)] = origin

    def policy(self, name: str) -> Policy:
        try:
            return self.policies[name]
        except KeyError:
            raise RegistryError(f"unknown scheduling policy {name!r} (known: {', '.join(sorted(self.policies))})") \
                from None

    def policy_problems(self, policy: Policy) -> list[str]:
        problems = [f"policy {policy.name!r}: unknown filter {f!r}" for f in policy.filters if f not in self.filters]
        problems += [f"policy {policy.name!r}: unknown weight {w!r}" for w, _ in policy.weights if w not in self.weights]
        if policy.balancer not in self.balancers:
            problems.append(f"policy {policy.name!r}: unknown balancer {policy.balancer!r}")
        return problems


def _import(path: str) -> Any:
    module, _, attr = path.rpartition(".")
    if not module:
        raise ImportError(f"{path!r} is not a dotted path")
    return getattr(importlib.import_module(module), attr)


def _entry_point_classes() -> Iterable[tuple[str, Any]]:
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        origin = f"entry point {ep.name} = {ep.value}"
        try:
            yield origin, ep.load()
        except Exception as exc:
            yield origin, exc


def build() -> Registry:
    reg = Registry()
    for cls in (*BUILTIN_FILTERS, *BUILTIN_WEIGHTS, *BUILTIN_BALANCERS):
        reg.add(cls, f"built-in {cls.__module__}.{cls.__name__}")
    for path in getattr(settings, "SCHEDULER_PLUGINS", ()) or ():
        try:
            loaded = _import(path)
        except Exception as exc:
            reg.errors.append(f"PORTAL_SCHEDULER_PLUGINS: {path} does not import: {exc}")
            continue
        reg.add(loaded, f"PORTAL_SCHEDULER_PLUGINS {path}")
    for origin, loaded in _entry_point_classes():
        if isinstance(loaded, Exception):
            reg.errors.append(f"{origin} does not load: {loaded}")
        else:
            reg.add(loaded, origin)
    reg.policies = dict(BUILTIN_POLICIES)
    for name, data in (getattr(settings, "SCHEDULER_POLICIES", None) or {}).items():
        try:
            reg.policies[name] = Policy.from_dict(name, data)
        except (TypeError, ValueError, AttributeError) as exc:
            reg.errors.append(f"PORTAL_SCHEDULER_POLICIES[{name!r}] is malformed: {exc}")
    return reg


_registry: Registry | None = None


def registry() -> Registry:
    """The registry, built on first use (and again after `reload()`)."""
    global _registry
    if _registry is None:
        _registry = build()
    return _registry


def reload() -> Registry:
    """Build the registry again (after settings changed: tests, or a plugin installed)."""
    global _registry
    _registry = None
    return registry()


def policy_names() -> list[str]:
    return sorted(registry().policies)


@checks.register()
def check_scheduler_plugins(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Start-up check: plugins load, names are unique, policies name only known plugins."""
    reg = reload()
    found: list[checks.CheckMessage] = []
    for error in reg.errors:
        ident = "scheduler.E001" if "taken twice" in error else "scheduler.E002"
        found.append(checks.Error(error, hint="Fix PORTAL_SCHEDULER_PLUGINS or the installed plugin packages.",
                                  id=ident))
    for policy in reg.policies.values():
        for problem in reg.policy_problems(policy):
            found.append(checks.Error(problem, hint="Fix PORTAL_SCHEDULER_POLICIES.", id="scheduler.E003"))
    return found


# --- hooks the apps above register ----------------------------------------------------------------

RequestBuilder = Callable[[list[int]], "dict[int, VMRequest]"]
RecentMoves = Callable[[int], "set[int]"]
_request_builders: list[RequestBuilder] = []
_recent_moves: list[RecentMoves] = []


def register_request_builder(builder: RequestBuilder) -> None:
    if builder not in _request_builders:
        _request_builders.append(builder)


def register_recent_moves(provider: RecentMoves) -> None:
    if provider not in _recent_moves:
        _recent_moves.append(provider)


def requests_for(vm_ids: list[int]) -> dict[int, VMRequest]:
    found: dict[int, VMRequest] = {}
    for builder in _request_builders:
        found.update(builder(vm_ids))
    return found


def migrated_since(minutes: int) -> set[int]:
    """VMs migrated (a "vm.migrate" job started) in the last `minutes`, plus what registered providers say."""
    since = timezone.now() - timedelta(minutes=minutes)
    ids = {int(t) for t in Job.objects.filter(kind__startswith="vm.migrate", target_type="vm", created_at__gte=since)
           .values_list("target_id", flat=True) if str(t).isdigit()}
    for provider in _recent_moves:
        ids |= set(provider(minutes))
    return ids


# --- recent failures per host (the recent_failures weight) ---------------------------------------

HostFailures = Callable[[int], "dict[int, int]"]
_host_failures: list[HostFailures] = []


def register_host_failures(provider: HostFailures) -> None:
    """Add a source of {host id: recent failures} (once); called with the window in seconds."""
    if provider not in _host_failures:
        _host_failures.append(provider)


def host_failures(seconds: int | None = None) -> dict[int, int]:
    """Failures per host id in the last `seconds` (settings.HOST_FAILURE_WINDOW_SECONDS), summed over providers."""
    window = int(seconds if seconds is not None else getattr(settings, "HOST_FAILURE_WINDOW_SECONDS", 600))
    total: dict[int, int] = {}
    if window <= 0:
        return total
    for provider in _host_failures:
        for host_id, count in provider(window).items():
            total[host_id] = total.get(host_id, 0) + int(count)
    return total
