"""Reads of the time series for the charts (the VM page, the host admin page, the API).

A VM's series is readable by whoever may see the VM (vms.selectors decides; others' VMs are 404 like
missing ones); a host's by administrators only. The range picks the resolution: the last hour in raw
samples, the last day in 5-minute rows, the last week in hourly rows. One query per series.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from cluster.models import Host
from portal.actors import Actor, require_admin
from portal.exceptions import NotFound, ValidationFailed
from vms.selectors import vm_get

from .collector import MIB, sample_point
from .models import HostSample, Resolution, VMSample


@dataclass(frozen=True)
class Range:
    key: str
    label: str
    span: timedelta
    resolution: str


RANGES = {r.key: r for r in (
    Range("1h", "Last hour", timedelta(hours=1), Resolution.RAW),
    Range("1d", "Last day", timedelta(days=1), Resolution.FIVE_MIN),
    Range("1w", "Last week", timedelta(days=7), Resolution.HOUR),
)}


def metrics_range(key: object) -> Range:
    """The range asked for (`1h`, `1d`, `1w`); anything else is refused."""
    text = str(key or "1h")
    if text not in RANGES:
        raise ValidationFailed(f"range: one of {', '.join(RANGES)}.", field="range")
    return RANGES[text]


def _step(r: Range) -> int:
    steps: dict[str, int] = {Resolution.RAW: settings.METRICS_INTERVAL_SECONDS, Resolution.FIVE_MIN: 300,
                             Resolution.HOUR: 3600}
    return steps[r.resolution]


def vm_metrics(*, actor: Actor, vm_id: object, range_key: object = "1h") -> dict[str, Any]:
    """A VM's samples over the range, oldest first, as the charts and the API give them."""
    r = metrics_range(range_key)
    vm = vm_get(user=actor, vm_id=vm_id)
    since = timezone.now() - r.span
    rows = (VMSample.objects.filter(vm=vm, resolution=r.resolution, at__gt=since).order_by("at")
            .only("at", "cpu_pct", "mem_used_bytes", "memory_mib", "disk_read_bps", "disk_write_bps",
                  "net_rx_bps", "net_tx_bps", "vm_id"))
    return {"vm": vm.pk, "range": r.key, "resolution": r.resolution, "step_seconds": _step(r),
            "points": [sample_point(row) for row in rows]}


def host_metrics(*, actor: Actor, host_id: object, range_key: object = "1h") -> dict[str, Any]:
    """A host's samples over the range (administrators only)."""
    require_admin(actor)
    r = metrics_range(range_key)
    text = str(host_id)
    host = Host.objects.filter(pk=int(text)).first() if text.isascii() and text.isdigit() and len(text) < 18 else None
    if host is None:
        raise NotFound("No such host.")
    since = timezone.now() - r.span
    rows = HostSample.objects.filter(host=host, resolution=r.resolution, at__gt=since).order_by("at")
    points = [{"t": int(row.at.timestamp()), "cpu_pct": round(row.cpu_pct, 2), "mem_used_bytes": row.mem_used_bytes,
               "memory_bytes": row.mem_total_bytes, "running_domains": row.running_domains,
               "disk_read_bps": round(row.disk_read_bps, 1), "disk_write_bps": round(row.disk_write_bps, 1),
               "net_rx_bps": round(row.net_rx_bps, 1), "net_tx_bps": round(row.net_tx_bps, 1)} for row in rows]
    return {"host": host.pk, "range": r.key, "resolution": r.resolution, "step_seconds": _step(r),
            "points": points, "memory_total_bytes": host.memory_mib * MIB}
