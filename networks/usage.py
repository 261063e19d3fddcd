"""Who uses a network, told by the apps that put things on networks (vms registers its NICs).

networks sits below vms: it cannot ask about VMs itself, so deleting or reshaping a network asks
every registered provider instead (like quotas.usage).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cluster.models import Host

    from .models import Network

# provider(network, host or None) -> descriptions of what uses the network (on that host), e.g. "web1 (alice)"
UsersProvider = Callable[["Network", "Host | None"], list[str]]
# provider(network) -> MACs in use on the network (a reservation for an unknown MAC is fine; this names owners)
_providers: list[UsersProvider] = []


def register_network_users(provider: UsersProvider) -> UsersProvider:
    if provider not in _providers:
        _providers.append(provider)
    return provider


def network_users(network: Network, host: Host | None = None) -> list[str]:
    """What uses the network (on one host, or anywhere)."""
    out: list[str] = []
    for provider in _providers:
        out.extend(provider(network, host))
    return out
