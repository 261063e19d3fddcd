"""Who reconciles what runs on a host: observers registered by the apps that own domains.

cluster lists domains and receives libvirt's lifecycle events; it does not know what a VM is. An
app that owns domains (vms) registers an observer in its AppConfig.ready; `host_sync` hands every
observer the host's domains and records whatever none of them claims as a foreign domain. An observer
may also just watch (monitoring samples the counters that the same listing reads when it asks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from portal.hypervisor import DomainState

if TYPE_CHECKING:  # models import the app registry; observers are registered during ready()
    from .models import Host


@dataclass(frozen=True)
class Reconciled:
    """What an observer made of a host's domains: the uuids that are its own, and how many drifted."""

    claimed: set[str] = field(default_factory=set)
    drifted: int = 0
    # Unclaimed domains the observer knows something about: the hint shown with them in the foreign
    # list (a stale copy of a VM that runs elsewhere), instead of the generic one.
    hints: dict[str, str] = field(default_factory=dict)


class DomainObserver(Protocol):
    def reconcile(self, *, host: Host, domains: list[DomainState]) -> Reconciled: ...

    def observe(self, *, host: Host, uuid: str) -> None: ...

    # Optional: `host_unreachable(*, host)` is called by host_sync when the host does not answer (its
    # state is in HostStatus.UNREACHABLE): the observer shows what it owns there as unknown.
    # Optional: `wants_stats(*, host) -> bool`: asked before the host's bulk listing; when any observer
    # says yes, the same single call also reads every running domain's counters (DomainState.stats:
    # CPU time, balloon, vCPUs, disk and network bytes), e.g. the monitoring collector on its interval.


_observers: list[DomainObserver] = []


def register_observer(observer: DomainObserver) -> None:
    """Add an observer once (AppConfig.ready may run more than once in tests)."""
    if all(type(o) is not type(observer) for o in _observers):
        _observers.append(observer)


def registered() -> list[DomainObserver]:
    return list(_observers)
