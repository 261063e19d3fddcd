"""The hosts' part of /readyz: enabled hosts' states as the monitor last recorded them (no libvirt call)."""

from __future__ import annotations

from django.conf import settings

from portal.health import Readiness

from .choices import HostStatus
from .models import Host

# States an administrator chose: such a host is not expected to be up.
_ADMIN_STATES = (HostStatus.PREPARING_FOR_MAINTENANCE, HostStatus.MAINTENANCE, HostStatus.STANDBY)


def hosts_ready() -> Readiness:
    """By settings.READY_HOSTS: any (one enabled host up, or none enabled), all (every enabled host that
    is not in maintenance or standby is up) or none (reported only)."""
    hosts = list(Host.objects.filter(enabled=True).order_by("name")
                 .values("name", "status", "last_seen_at", "last_error"))
    up = [h for h in hosts if h["status"] == HostStatus.UP]
    expected = [h for h in hosts if h["status"] not in _ADMIN_STATES]
    down = [h for h in expected if h["status"] != HostStatus.UP]
    rule = settings.READY_HOSTS
    if rule == "all":
        ready = not down
    elif rule == "any":
        ready = not hosts or bool(up)
    else:
        ready = True
    summary = f"{len(up)} of {len(hosts)} enabled hosts up"
    detail = {h["name"]: {"status": h["status"], "last_seen_at": h["last_seen_at"].isoformat()
                          if h["last_seen_at"] else None, "last_error": h["last_error"][:500]} for h in hosts}
    return Readiness(ready, summary, detail)
