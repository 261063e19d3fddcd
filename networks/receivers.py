"""What networks does when something happens below it (cluster signals)."""

from __future__ import annotations

from typing import Any

from cluster.models import Host

from .services import networks_ensure_on_host


def ensure_networks(sender: Any, *, host: Host, **kwargs: Any) -> None:
    """A host is reachable: the portal's networks on it are defined and running."""
    networks_ensure_on_host(host=host)
