"""Web doors of monitoring: the context of the VM page's Monitoring panel and of the host admin page's
charts. The charts themselves read the metrics API (monitoring.api) from the browser."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.urls import reverse

from cluster.models import Host
from vms.models import VM

from .selectors import RANGES

CHARTS = [("cpu", "CPU"), ("memory", "Memory"), ("disk", "Disk throughput"), ("network", "Network throughput")]


def _charts_context(url: str, note: str) -> dict[str, Any]:
    return {"metrics_url": url, "metrics_ranges": list(RANGES.values()), "metrics_charts": CHARTS,
            "metrics_interval": settings.METRICS_INTERVAL_SECONDS, "metrics_note": note}


def panel_context(request: HttpRequest, vm: VM) -> dict[str, Any]:
    """What the VM page's Monitoring panel needs (registered with vms.panels)."""
    return {**_charts_context(reverse("api-vm-metrics", args=[vm.pk]),
                              "Averages per sample; the last hour updates live."),
            "metrics_vm": vm.pk}


def host_charts_context(host: Host) -> dict[str, Any]:
    """What the host admin page's charts need (CPU: the host's running domains, percent of its CPUs)."""
    return {**_charts_context(reverse("api-host-metrics", args=[host.pk]),
                              "CPU: the host's running domains, percent of its CPUs."), "metrics_vm": None}
