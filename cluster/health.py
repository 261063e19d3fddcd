"""The hosts' part of /readyz: enabled hosts' states as the monitor last recorded them (no libvirt call)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from portal.health import Readiness

from .choices import HostStatus
from .models import Host

# States an administrator chose: such a host is not expected to be up.
_ADMIN_STATES = (HostStatus.PREPARING_FOR_MAINTENANCE, HostStatus.MAINTENANCE, HostStatus.STANDBY)


def stale_seconds() -> int:
    """How old an up host's last heartbeat may be before /readyz stops counting it as up."""
    return max(60, 3 * int(settings.RECONCILE_SECONDS))


def hosts_ready() -> Readiness:
    """By settings.READY_HOSTS: any (one enabled host up, or none enabled), all (every enabled host that
    is not in maintenance or standby is up) or none (reported only)."""
    hosts = list(Host.objects.filter(enabled=True).order_by("name")
                 .values("name", "status", "last_seen_at", "last_error"))
    # "Up" as the monitor last saw it, and lately: with no monitor running, the recorded states age and
    # say nothing of the hosts now (a host's heartbeat is every RECONCILE_SECONDS).
    stale_after = stale_seconds()
    since = timezone.now() - timedelta(seconds=stale_after)
    stale = [h for h in hosts if h["status"] == HostStatus.UP and (h["last_seen_at"] is None or h["last_seen_at"] < since)]
    for h in stale:
        h["status"] = f"{HostStatus.UP} (not seen for over {stale_after} s: is a monitor running?)"
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
    if stale:
        summary += f"; {len(stale)} not seen by a monitor for over {stale_after} s"
    detail = {h["name"]: {"status": h["status"], "last_seen_at": h["last_seen_at"].isoformat()
                          if h["last_seen_at"] else None, "last_error": h["last_error"][:500]} for h in hosts}
    return Readiness(ready, summary, detail)
