"""The reports as tables: one set of columns for every door (admin pages, API, CSV, CLI), so a CSV from the
admin, the API and `manage.py report` says the same thing in the same order."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .usage import IdleVM, UsageReport, UsageRow

USAGE_HEADER = (
    "subject", "vms", "vm_hours", "vcpu_hours", "memory_gib_hours", "disk_gib_hours", "avg_cpu_pct",
    "peak_vms", "limit_vms", "peak_vcpus", "limit_vcpus", "peak_memory_gib", "limit_memory_gib",
    "peak_disk_gib", "limit_disk_gib",
)
IDLE_HEADER = ("vm", "name", "owner", "group", "host", "avg_cpu_pct", "sampled_hours")


def _n(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def usage_values(row: UsageRow) -> dict[str, object]:
    """One row as plain values (the API's JSON object, a CSV line), rounded to three decimals."""
    values: dict[str, object] = {
        "subject": row.name, "subject_id": row.subject_id, "vms": row.vms, "vm_hours": _n(row.vm_hours),
        "vcpu_hours": _n(row.vcpu_hours), "memory_gib_hours": _n(row.memory_gib_hours),
        "disk_gib_hours": _n(row.disk_gib_hours), "avg_cpu_pct": _n(row.avg_cpu_pct, 1),
    }
    for p in row.peaks:
        values[f"peak_{p.resource}"] = _n(p.peak)
        values[f"limit_{p.resource}"] = _n(p.limit)
    return values


def usage_lines(report: UsageReport) -> list[list[object]]:
    return [[usage_values(r).get(column) for column in USAGE_HEADER] for r in report.rows]


def idle_values(item: IdleVM) -> dict[str, object]:
    vm = item.vm
    return {"vm": vm.pk, "name": vm.name, "owner": vm.owner.get_username(), "group": vm.group.name if vm.group else "",
            "host": vm.host.name, "avg_cpu_pct": _n(item.avg_cpu_pct, 2), "sampled_hours": _n(item.sampled_hours, 1)}


def idle_lines(items: Iterable[IdleVM]) -> list[list[object]]:
    return [[idle_values(i)[column] for column in IDLE_HEADER] for i in items]


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    # A spreadsheet would run a cell starting with one of these as a formula (group names are free text).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(header: Sequence[str], lines: Iterable[Sequence[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for line in lines:
        writer.writerow([_cell(v) for v in line])
    return out.getvalue()


def usage_csv(report: UsageReport) -> str:
    return to_csv(USAGE_HEADER, usage_lines(report))


def idle_csv(items: Iterable[IdleVM]) -> str:
    return to_csv(IDLE_HEADER, idle_lines(items))


@dataclass(frozen=True)
class Bar:
    """One bar of a server-rendered chart: a label, a value and its length in percent of the largest."""

    label: str
    value: float
    percent: float


def bars(rows: Sequence[UsageRow], *, metric: str = "vcpu_hours") -> list[Bar]:
    largest = max((getattr(r, metric) for r in rows), default=0.0) or 1.0
    return [Bar(r.name, round(getattr(r, metric), 1), round(100 * getattr(r, metric) / largest, 1)) for r in rows]


def csv_filename(kind: str, report: UsageReport | None = None) -> str:
    if report is None:
        return f"{kind}.csv"
    return f"{kind}-{report.by}-{report.period.start:%Y%m%d%H%M}-{report.period.end:%Y%m%d%H%M}.csv"
