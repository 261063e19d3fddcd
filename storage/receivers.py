"""What storage does when something happens below it (cluster signals)."""

from __future__ import annotations

from typing import Any

from cluster.models import Host

from .services import pools_ensure_on_host


def ensure_pools(sender: Any, *, host: Host, **kwargs: Any) -> None:
    """A host is reachable: its portal pools exist (created, or defined again where missing)."""
    pools_ensure_on_host(host=host)
