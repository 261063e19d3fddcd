"""Downsampling and retention of the time series (issue #14 part 2): a housekeeping chore, so the
monitor's leader runs it, once per turn cluster-wide (cluster.housekeeping), at most once a minute.

Raw samples are rolled into 5-minute rows and 5-minute rows into hourly ones. A row at `at` covers
(at - bucket, at]: the 5-minute row at 12:05 sums up the raw samples stamped 12:00:00 (exclusive) to
12:05:00 (inclusive). A bucket is rolled once it is complete plus `GRACE` (a sample being committed by
a monitor while the bucket closes still counts), in at most `MAX_BUCKETS` buckets a pass (a leader that
was down for days catches up over a few passes). Averages are weighted by `seconds` (how long the VM ran
in each row), `seconds` are summed, the allotment (vCPUs, memory, disk) is the largest seen. Rows are
written with one upsert per batch: a pass run again writes the same rows.

Retention then deletes rows older than their resolution's keep (`PORTAL_METRICS_RETENTION_*`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Min, Model
from django.utils import timezone

from .models import HostSample, Resolution, VMSample

GRACE = timedelta(seconds=60)
MAX_BUCKETS = 48
MIN_PASS_SECONDS = 60.0

RATES = ["cpu_pct", "disk_read_bps", "disk_write_bps", "net_rx_bps", "net_tx_bps"]
STEPS = [(Resolution.RAW, Resolution.FIVE_MIN, 300), (Resolution.FIVE_MIN, Resolution.HOUR, 3600)]


@dataclass(frozen=True)
class Series:
    """How one sample table rolls up: its series key, averaged fields, largest-of fields."""

    model: type[Model]
    key: str
    averaged: list[str]
    largest: list[str] = field(default_factory=list)
    optional_avg: list[str] = field(default_factory=list)  # averaged over the rows that have a value
    last: list[str] = field(default_factory=list)  # the newest row's value


VM_SERIES = Series(VMSample, "vm_id", RATES, ["vcpus", "memory_mib", "disk_gib"], ["mem_used_bytes"], ["host_id"])
HOST_SERIES = Series(HostSample, "host_id", [*RATES, "mem_used_bytes"], ["mem_total_bytes", "running_domains"])


def bucket_end(at: datetime, seconds: int) -> datetime:
    """The end of the bucket `at` falls in: buckets are (end - seconds, end], aligned on the epoch."""
    epoch = at.timestamp()
    end = -(-epoch // seconds) * seconds  # ceil
    return datetime.fromtimestamp(end, tz=UTC)


def combine(rows: list[dict[str, Any]], series: Series) -> dict[str, Any]:
    """One coarser row from finer ones (dicts of their fields)."""
    seconds = sum(r["seconds"] for r in rows)
    out: dict[str, Any] = {"seconds": seconds}
    for name in series.averaged:
        if seconds > 0:
            out[name] = sum(r[name] * r["seconds"] for r in rows) / seconds
        else:
            out[name] = sum(r[name] for r in rows) / len(rows)
    for name in series.optional_avg:
        known = [r for r in rows if r[name] is not None]
        if not known:
            out[name] = None
        else:
            weight = sum(r["seconds"] for r in known)
            value = (sum(r[name] * r["seconds"] for r in known) / weight if weight > 0
                     else sum(r[name] for r in known) / len(known))
            out[name] = round(value)
    for name in series.largest:
        out[name] = max(r[name] for r in rows)
    newest = max(rows, key=lambda r: r["at"])
    for name in series.last:
        out[name] = newest[name]
    if "mem_used_bytes" in series.averaged:
        out["mem_used_bytes"] = round(out["mem_used_bytes"])
    return out


def rollup(series: Series, src: str, dst: str, seconds: int, *, now: datetime) -> int:
    """Roll complete buckets of `src` rows not rolled yet into `dst` rows; how many rows were written."""
    manager = series.model._default_manager
    limit = bucket_end(now - GRACE, seconds)
    if limit > now - GRACE:
        limit -= timedelta(seconds=seconds)  # the bucket `now - GRACE` is in is not complete yet
    done = manager.filter(resolution=dst).aggregate(m=Max("at"))["m"]
    pending = manager.filter(resolution=src)
    if done is not None:
        pending = pending.filter(at__gt=done)
    first = pending.aggregate(m=Min("at"))["m"]  # the oldest row not rolled (after a gap too)
    if first is None:
        return 0
    start = bucket_end(first, seconds) - timedelta(seconds=seconds)  # rows after it
    end = min(limit, start + timedelta(seconds=seconds * MAX_BUCKETS))
    if end <= start:
        return 0
    names = ["at", "seconds", series.key, *series.averaged, *series.largest, *series.optional_avg, *series.last]
    names = list(dict.fromkeys(names))
    groups: dict[tuple[Any, datetime], list[dict[str, Any]]] = {}
    rows = manager.filter(resolution=src, at__gt=start, at__lte=end).values(*names)
    for row in rows.iterator(chunk_size=5000):
        groups.setdefault((row[series.key], bucket_end(row["at"], seconds)), []).append(row)
    made = [series.model(**{series.key: key, "resolution": dst, "at": at, **combine(parts, series)})
            for (key, at), parts in groups.items()]
    if made:
        update = ["seconds", *series.averaged, *series.largest, *series.optional_avg, *series.last]
        with transaction.atomic():
            manager.bulk_create(made, batch_size=1000, update_conflicts=True,
                                unique_fields=[series.key.removesuffix("_id"), "resolution", "at"],
                                update_fields=[n.removesuffix("_id") if n == "host_id" else n for n in update])
    return len(made)


def retention_cutoffs(now: datetime) -> dict[str, datetime]:
    return {Resolution.RAW: now - timedelta(hours=settings.METRICS_RETENTION_RAW_HOURS),
            Resolution.FIVE_MIN: now - timedelta(days=settings.METRICS_RETENTION_5M_DAYS),
            Resolution.HOUR: now - timedelta(days=settings.METRICS_RETENTION_1H_DAYS)}


def retention_apply(*, now: datetime) -> int:
    """Delete the rows past their resolution's keep; how many were deleted."""
    deleted = 0
    for model in (VMSample, HostSample):
        for resolution, cutoff in retention_cutoffs(now).items():
            # Nothing refers to samples: one DELETE statement (Django's fast delete), no rows fetched.
            deleted += model._default_manager.filter(resolution=resolution, at__lt=cutoff).delete()[0]
    return deleted


def samples_maintain(*, now: datetime | None = None) -> dict[str, int]:
    """Roll up then prune, for VMs and hosts (the chore's body; tests call it with a fixed `now`)."""
    now = now or timezone.now()
    result: dict[str, int] = {}
    for series, label in ((VM_SERIES, "vm"), (HOST_SERIES, "host")):
        for src, dst, seconds in STEPS:
            result[f"{label}_{dst}"] = rollup(series, src, dst, seconds, now=now)
    result["deleted"] = retention_apply(now=now)
    return result


_next_pass = 0.0


def samples_housekeeping() -> dict[str, int] | None:
    """The registered chore: `samples_maintain` at most once a minute (the monitor's turn is shorter)."""
    global _next_pass
    if time.monotonic() < _next_pass:
        return None
    _next_pass = time.monotonic() + MIN_PASS_SECONDS
    return samples_maintain()

