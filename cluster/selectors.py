"""Host reads (hosts are for administrators; the API and Slack check that before calling)."""

from __future__ import annotations

from django.db.models import QuerySet

from portal.exceptions import NotFound
from portal.models import PluginToken

from .models import Cluster, Host


def host_list() -> QuerySet[Host]:
    return Host.objects.all()


def host_get(*, name_or_id: object) -> Host:
    """A host by numeric id or name."""
    text = str(name_or_id)
    host = Host.objects.filter(pk=int(text)).first() if (text.isascii() and text.isdigit() and len(text) <= 18) else Host.objects.filter(name=text).first()
    if host is None:
        raise NotFound(f"Host {text[:60]!r} not found.")
    return host


def host_for_plugin(plugin: PluginToken, key: str) -> Host:
    """A host an external plugin may attach jobs to: only plugins scoped to all targets reach hosts."""
    if not plugin.all_targets:
        raise NotFound(f"Host {str(key)[:60]!r} not found.")
    return host_get(name_or_id=key)


# --- clusters (issue #12: the API's read-only list) ---------------------------------------------------

def cluster_list() -> QuerySet[Cluster]:
    """Every cluster with its hosts (one query for them)."""
    return Cluster.objects.prefetch_related("hosts")


def cluster_get(*, name_or_id: object) -> Cluster:
    """A cluster by numeric id or name."""
    text = str(name_or_id)
    found = (cluster_list().filter(pk=int(text)) if (text.isascii() and text.isdigit() and len(text) <= 18) else cluster_list().filter(name=text)).first()
    if found is None:
        raise NotFound(f"Cluster {text[:60]!r} not found.")
    return found
