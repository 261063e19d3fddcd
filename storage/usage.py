"""Who uses a storage pool besides storage itself, told by the apps above storage (backups registers its
backups in a backup domain). Removing a storage domain asks every registered provider first (like
networks.usage for networks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import StoragePool

# provider(pool) -> descriptions of what uses the pool, e.g. "backup 12 of web1"
PoolUsersProvider = Callable[["StoragePool"], list[str]]
_providers: list[PoolUsersProvider] = []


def register_pool_users(provider: PoolUsersProvider) -> PoolUsersProvider:
    if provider not in _providers:
        _providers.append(provider)
    return provider


def registered_pool_users(pool: StoragePool) -> list[str]:
    """What the registered providers say uses `pool`."""
    out: list[str] = []
    for provider in _providers:
        out.extend(provider(pool))
    return out
