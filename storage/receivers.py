"""What storage does when something happens below it (cluster signals)."""

from __future__ import annotations

from typing import Any

from cluster.models import Host

from .services import pool_storage_dir, pools_ensure_on_host


def ensure_pools(sender: Any, *, host: Host, **kwargs: Any) -> None:
    """A host is reachable: its portal pools exist (created, or defined again where missing)."""
    pools_ensure_on_host(host=host)


def storage_dir_pool(sender: Any, *, host: Host, storage_dir: str | None = None, **kwargs: Any) -> None:
    """A host is being registered with a storage directory of its own: its portal pool is listed there."""
    pool_storage_dir(host=host, storage_dir=storage_dir)
