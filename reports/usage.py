"""Usage reports (issue #14): what users, groups and hosts used over a period, read from monitoring's samples.

How a period [start, end) is counted (docs/reports.md has the long version):

- A sample row at `at` stands for the interval that ends at `at`: one hour for an hourly rollup, five minutes
  for a 5-minute rollup, one collector interval for a raw sample. `seconds` is how long of it the VM ran;
  `vcpus`, `memory_mib` and `disk_gib` are its allotment then. VM-hours are sum(seconds) / 3600, vCPU-hours
  sum(vcpus * seconds) / 3600, memory GiB-hours sum(memory_mib / 1024 * seconds) / 3600, disk GiB-hours
  sum(disk_gib * seconds) / 3600.
- The period is cut at whole hours into a head [start, first whole hour), the whole hours up to the newest
  hourly rollup, and a tail (the rest up to `end`). Each piece is read from ONE resolution, so nothing is
  counted twice: the whole hours from the hourly rollups, the head and the tail from the finest resolution
  whose rows reach back to the piece's start (raw, else 5-minute, else hourly). When raw samples do not reach
  back to the tail's start but 5-minute rollups do, the tail is read from those up to the newest one and
  from raw samples after it (what is not rolled up yet). When no resolution reaches back far enough, the one
  reaching back furthest is used (what retention left).
- A 5-minute or hourly row that straddles a piece's edge counts the part inside, in proportion (running time
  is taken as spread evenly over the row's interval); a raw sample counts in the piece where it ends.
- Users: every VM they own (personal and team VMs). Groups: the team VMs (a VM's group is the quota it is
  charged to, fixed at creation, so members joining or leaving a group move nothing). Hosts: where the
  sample says the VM ran (a migrated VM counts on each host for its time there). Deleted VMs keep their
  samples and still count for the time they ran.
- Peak use: the highest hourly average over the period of running VMs, vCPUs, memory and disk (the sum of
  allotment * seconds within one clock hour / 3600), against the subject's quota limits: a user's personal
  quota (and the peak of their personal VMs only, which is what that quota charges), a group's quota, a
  host's CPUs and memory.

Every read costs a constant number of queries whatever the number of VMs: aggregates grouped by subject and
clock hour in the database; only the rows straddling a piece's edge (at most one per VM and edge) are read.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db.models import Case, Count, F, FloatField, Max, Min, Q, QuerySet, Sum, Value, When
from django.db.models.functions import TruncHour
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from cluster.models import Host
from monitoring.models import Resolution, VMSample
from portal.actors import Actor, require_admin
from portal.exceptions import ValidationFailed
from quotas.models import Quota
from vms.choices import VMStatus
from vms.models import VM

BY_CHOICES = ("user", "group", "host")
HOUR = timedelta(hours=1)
# How long one row of each resolution stands for (a raw sample counts where it ends: no length needed).
ROW_LENGTH: dict[str, timedelta] = {Resolution.RAW: timedelta(0), Resolution.FIVE_MIN: timedelta(minutes=5), Resolution.HOUR: HOUR}
# A resolution "reaches back" to a piece's start when its oldest row ends at most this long after it.
REACH: dict[str, timedelta] = {Resolution.RAW: timedelta(minutes=5), Resolution.FIVE_MIN: timedelta(minutes=5), Resolution.HOUR: HOUR}
FINEST_FIRST = (Resolution.RAW, Resolution.FIVE_MIN, Resolution.HOUR)
MAX_PERIOD = timedelta(days=3660)
DEFAULT_PERIOD = timedelta(days=7)

_SUBJECT_FIELD = {"user": "vm__owner_id", "group": "vm__group_id", "host": "host_id", "vm": "vm_id"}


# --- the period -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Period:
    """A half-open interval [start, end) of aware datetimes."""

    start: datetime
    end: datetime

    @property
    def hours(self) -> float:
        return (self.end - self.start).total_seconds() / 3600


def _parse_moment(raw: str, *, name: str, end: bool) -> datetime:
    text = raw.strip()
    moment: datetime | None = None
    try:
        day: date | None = parse_date(text)
        if day is not None:
            # A bare date: from the start of that day; `to` a date means up to the end of that day.
            moment = datetime.combine(day + timedelta(days=1) if end else day, time.min)
        else:
            moment = parse_datetime(text)
    except OverflowError:  # the day after 9999-12-31: a date, but past the calendar's end
        raise ValidationFailed(f"{name!r} is too far in the future.", field=name) from None
    except ValueError:
        moment = None
    if moment is None:
        raise ValidationFailed(f"{name!r} must be a date (2026-12-01) or a date and time (2026-12-01T08:00Z); "
                               f"got {text[:40]!r}.", field=name)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, timezone.get_current_timezone())
    return moment


def period_parse(*, start: str | None, end: str | None, now: datetime | None = None) -> Period:
    """The period from the doors' `from` and `to` (dates or ISO date-times; `to` a date includes that day).
    Defaults: up to now, seven days long. Refused: unreadable dates, `to` not after `from`, over ten years."""
    now = now or timezone.now()
    stop = _parse_moment(end, name="to", end=True) if end else now
    begin = _parse_moment(start, name="from", end=False) if start else stop - DEFAULT_PERIOD
    if stop <= begin:
        raise ValidationFailed("'to' must be after 'from'.", field="to")
    if stop.year >= 9999:
        raise ValidationFailed("'to' is too far in the future.", field="to")
    if stop - begin > MAX_PERIOD:
        raise ValidationFailed("A report covers at most ten years.", field="from")
    return Period(begin, stop)


def _by(by: str) -> str:
    if by not in BY_CHOICES:
        raise ValidationFailed(f"'by' must be one of: {', '.join(BY_CHOICES)} (got {str(by)[:20]!r}).", field="by")
    return by


# --- which rows count -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Piece:
    """One part of the period and the one resolution it is read from (None: no samples at all)."""

    start: datetime
    end: datetime
    resolution: str | None


def _ceil_hour(moment: datetime) -> datetime:
    floor = moment.replace(minute=0, second=0, microsecond=0)
    return floor if floor == moment else floor + HOUR


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _spans() -> dict[str, tuple[datetime, datetime]]:
    """Oldest and newest row of each resolution (one query over the by-time index)."""
    rows = (VMSample.objects.order_by().values("resolution").annotate(lo=Min("at"), hi=Max("at"))
            .values_list("resolution", "lo", "hi"))
    return {resolution: (lo, hi) for resolution, lo, hi in rows}


def _choose(spans: dict[str, tuple[datetime, datetime]], start: datetime, order: Iterable[str]) -> str | None:
    order = tuple(order)
    for resolution in order:
        if _reaches(spans, resolution, start):
            return resolution
    present = [r for r in order if r in spans]
    if not present:
        return None
    return min(present, key=lambda r: spans[r][0] - REACH[r])  # what reaches back furthest (stable: finest first)


def usage_plan(period: Period, spans: dict[str, tuple[datetime, datetime]] | None = None) -> list[Piece]:
    """The pieces the period is read in: head (finest data), whole hours (hourly rollups), tail (finest data)."""
    spans = _spans() if spans is None else spans
    start, end = period.start, period.end
    head_end = min(_ceil_hour(start), end)
    hours_end = head_end
    if Resolution.HOUR in spans:
        hours_end = max(head_end, min(_floor_hour(end), spans[Resolution.HOUR][1]))
    pieces = []
    if head_end > start:
        pieces.append(Piece(start, head_end, _choose(spans, start, FINEST_FIRST)))
    if hours_end > head_end:
        coarse_first = (Resolution.HOUR, Resolution.FIVE_MIN, Resolution.RAW)
        pieces.append(Piece(head_end, hours_end, _choose(spans, head_end, coarse_first)))
    cursor = hours_end
    if cursor < end and not _reaches(spans, Resolution.RAW, cursor) and _reaches(spans, Resolution.FIVE_MIN, cursor):
        # Raw samples do not reach back this far but 5-minute rollups do: those up to the newest one, then
        # whatever is finest after it (the raw samples not rolled up yet).
        five_end = min(end, max(cursor, spans[Resolution.FIVE_MIN][1]))
        if five_end > cursor:
            pieces.append(Piece(cursor, five_end, Resolution.FIVE_MIN))
            cursor = five_end
    if end > cursor:
        pieces.append(Piece(cursor, end, _choose(spans, cursor, FINEST_FIRST)))
    return pieces


def _reaches(spans: dict[str, tuple[datetime, datetime]], resolution: str, start: datetime) -> bool:
    return resolution in spans and spans[resolution][0] - REACH[resolution] <= start


# --- adding up ------------------------------------------------------------------------------------------------

# Sums per (subject, flag) and clock hour: running seconds, vCPU-, MiB-, GiB- and CPU%-seconds.
Sums = list[float]
Accumulator = dict[tuple[Any, bool], dict[datetime, Sums]]


def _hour_key() -> Any:
    # The clock hour a row's interval lies in: rows end at `at`, so a row ending on the hour belongs to the hour before.
    return TruncHour(F("at") - timedelta(seconds=1))


def _accumulate(period: Period, *, subject: str, samples: QuerySet[VMSample],
                personal_flag: bool = False) -> tuple[Accumulator, list[Piece]]:
    """Add up the samples of the period per subject (and clock hour): constant queries per piece."""
    key = _SUBJECT_FIELD[subject]
    flag = (Case(When(vm__group__isnull=True, then=Value(True)), default=Value(False))
            if personal_flag else Value(False))
    acc: Accumulator = defaultdict(lambda: defaultdict(lambda: [0.0] * 5))
    plan = usage_plan(period)
    for piece in plan:
        if piece.resolution is None:
            continue
        length = ROW_LENGTH[piece.resolution]
        rows = samples.filter(resolution=piece.resolution)
        inner = (Q(at__gt=piece.start, at__lte=piece.end) if not length
                 else Q(at__gte=piece.start + length, at__lte=piece.end))
        grouped = (rows.filter(inner).annotate(subject=F(key), flag=flag, hour=_hour_key()).order_by()
                   .values("subject", "flag", "hour")
                   .annotate(s=Sum("seconds"),
                             vcpu_s=Sum(F("vcpus") * F("seconds"), output_field=FloatField()),
                             mem_s=Sum(F("memory_mib") * F("seconds"), output_field=FloatField()),
                             disk_s=Sum(F("disk_gib") * F("seconds"), output_field=FloatField()),
                             cpu_s=Sum(F("cpu_pct") * F("seconds"), output_field=FloatField()))
                   .values_list("subject", "flag", "hour", "s", "vcpu_s", "mem_s", "disk_s", "cpu_s"))
        for subj, is_personal, hour, *sums in grouped:
            bucket = acc[(subj, bool(is_personal))][hour]
            for i, value in enumerate(sums):
                bucket[i] += value or 0.0
        if not length:
            continue
        # Rows straddling an edge of the piece: the part inside, in proportion (at most one per VM and edge).
        edges = rows.filter(Q(at__gt=piece.start, at__lt=piece.start + length)
                            | Q(at__gt=piece.end, at__lt=piece.end + length))
        straddling = (edges.annotate(subject=F(key), flag=flag, hour=_hour_key()).order_by()
                      .values_list("subject", "flag", "hour", "at", "seconds", "vcpus", "memory_mib", "disk_gib",
                                   "cpu_pct"))
        for subj, is_personal, hour, at, seconds, vcpus, memory_mib, disk_gib, cpu_pct in straddling:
            inside = min(at, piece.end) - max(at - length, piece.start)
            if inside <= timedelta(0):
                continue
            part = seconds * (inside / length)
            bucket = acc[(subj, bool(is_personal))][hour]
            for i, value in enumerate((part, vcpus * part, memory_mib * part, disk_gib * part, cpu_pct * part)):
                bucket[i] += value
    return acc, plan


# --- the report -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Peak:
    """The highest hourly average of one resource over the period, against a limit (None: no limit)."""

    resource: str
    label: str
    unit: str
    peak: float
    limit: float | None

    @property
    def percent(self) -> int | None:
        if self.limit is None:
            return None
        if self.limit <= 0:
            return 100 if self.peak > 0 else 0
        return round(100 * self.peak / self.limit)


@dataclass(frozen=True)
class UsageRow:
    """What one user, group or host used over the period."""

    subject_id: int
    name: str
    vms: int
    vm_hours: float
    vcpu_hours: float
    memory_gib_hours: float
    disk_gib_hours: float
    avg_cpu_pct: float | None
    peaks: tuple[Peak, ...] = ()


@dataclass(frozen=True)
class UsageReport:
    """Rows sorted by vCPU-hours (largest first), the period's totals, and the pieces it was read in."""

    by: str
    period: Period
    rows: list[UsageRow]
    plan: list[Piece]
    totals: dict[str, float] = field(default_factory=dict)

    def top(self, n: int | None = None) -> list[UsageRow]:
        return self.rows[: n or settings.REPORT_TOP]


PEAK_RESOURCES = (  # (resource, label, unit, index in Sums, divisor of the hourly sum)
    ("vms", "VMs", "", 0, 3600.0),
    ("vcpus", "vCPUs", "", 1, 3600.0),
    ("memory_gib", "Memory", "GiB", 2, 3600.0 * 1024),
    ("disk_gib", "Disk", "GiB", 3, 3600.0),
)


def _limits(by: str, ids: list[int]) -> tuple[dict[int, str], dict[int, dict[str, float | None]]]:
    """Names and limits of the subjects (one or two queries whatever their number)."""
    names: dict[int, str] = {}
    limits: dict[int, dict[str, float | None]] = {}
    default = settings.DEFAULT_QUOTA

    def quota_limits(quota: Quota | None) -> dict[str, float | None]:
        # A subject without a quota row has the defaults (what quotas.selectors.quota_limits says too).
        def get(name: str) -> float:
            return float(getattr(quota, name) if quota is not None else default.get(name, 0))

        return {"vms": get("max_vms"), "vcpus": get("max_vcpus"), "memory_gib": get("max_memory_mib") / 1024,
                "disk_gib": get("max_disk_gib")}

    if by == "user":
        names = dict(User.objects.filter(pk__in=ids).values_list("pk", "username"))
        quotas = {q.user_id: q for q in Quota.objects.filter(user_id__in=ids)}
        limits = {pk: quota_limits(quotas.get(pk)) for pk in ids}
    elif by == "group":
        names = dict(Group.objects.filter(pk__in=ids).values_list("pk", "name"))
        quotas = {q.group_id: q for q in Quota.objects.filter(group_id__in=ids)}
        limits = {pk: quota_limits(quotas.get(pk)) for pk in ids}
    else:
        for pk, name, cpus, memory_mib in Host.objects.filter(pk__in=ids).values_list("pk", "name", "cpus",
                                                                                        "memory_mib"):
            names[pk] = name
            limits[pk] = {"vms": None, "vcpus": cpus or None, "memory_gib": (memory_mib / 1024) or None,
                          "disk_gib": None}
    return names, limits


def _vm_counts(period: Period, *, subject: str, samples: QuerySet[VMSample]) -> dict[Any, int]:
    """How many distinct VMs ran in the period per subject (rows that overlap it and say the VM ran)."""
    overlap = Q()
    for resolution, length in ROW_LENGTH.items():
        overlap |= Q(resolution=resolution, at__gt=period.start,
                     **({"at__lte": period.end} if not length else {"at__lt": period.end + length}))
    return dict(samples.filter(overlap, seconds__gt=0).annotate(subject=F(_SUBJECT_FIELD[subject])).order_by()
                .values("subject").annotate(n=Count("vm", distinct=True)).values_list("subject", "n"))


def usage_report(*, actor: Actor, by: str, period: Period) -> UsageReport:
    """Usage per user, group or host over the period (administrators only), largest vCPU-hours first."""
    require_admin(actor, "Only administrators can read usage reports.")
    by = _by(by)
    samples = VMSample.objects.all()
    if by == "group":
        samples = samples.filter(vm__group__isnull=False)
    elif by == "host":
        samples = samples.filter(host__isnull=False)
    acc, plan = _accumulate(period, subject=by, samples=samples, personal_flag=(by == "user"))
    counts = _vm_counts(period, subject=by, samples=samples)
    ids = sorted({subj for subj, _flag in acc})
    names, limits = _limits(by, ids)
    rows = []
    totals = [0.0] * 5
    for pk in ids:
        whole = [0.0] * 5
        hourly_for_peak: dict[datetime, Sums] = defaultdict(lambda: [0.0] * 5)
        for flag in (False, True):
            for hour, sums in acc.get((pk, flag), {}).items():
                whole = [a + b for a, b in zip(whole, sums, strict=True)]
                if by != "user" or flag:  # a user's personal quota charges their personal VMs only
                    hourly_for_peak[hour] = [a + b for a, b in zip(hourly_for_peak[hour], sums, strict=True)]
        totals = [a + b for a, b in zip(totals, whole, strict=True)]
        peaks = tuple(
            Peak(resource, label, unit,
                 max((sums[index] / divisor for sums in hourly_for_peak.values()), default=0.0),
                 limits.get(pk, {}).get(resource))
            for resource, label, unit, index, divisor in PEAK_RESOURCES)
        rows.append(UsageRow(
            subject_id=pk, name=names.get(pk, f"#{pk}"), vms=counts.get(pk, 0),
            vm_hours=whole[0] / 3600, vcpu_hours=whole[1] / 3600, memory_gib_hours=whole[2] / 3600 / 1024,
            disk_gib_hours=whole[3] / 3600, avg_cpu_pct=(whole[4] / whole[0]) if whole[0] else None, peaks=peaks))
    rows.sort(key=lambda r: (-r.vcpu_hours, -r.vm_hours, r.name))
    total = {"vm_hours": totals[0] / 3600, "vcpu_hours": totals[1] / 3600,
             "memory_gib_hours": totals[2] / 3600 / 1024, "disk_gib_hours": totals[3] / 3600}
    return UsageReport(by=by, period=period, rows=rows, plan=plan, totals=total)


# --- idle VMs -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class IdleVM:
    """A running VM whose average CPU stayed below the threshold over the window, with enough samples."""

    vm: VM
    avg_cpu_pct: float
    sampled_hours: float


@dataclass(frozen=True)
class IdleCriteria:
    """What "idle" means for one read: below `cpu_pct` percent for `days`, samples covering `coverage` of it."""

    cpu_pct: float
    days: float
    coverage: float

    @classmethod
    def from_settings(cls, *, cpu_pct: float | None = None, days: float | None = None) -> IdleCriteria:
        criteria = cls(cpu_pct=settings.IDLE_CPU_PCT if cpu_pct is None else float(cpu_pct),
                       days=settings.IDLE_DAYS if days is None else float(days),
                       coverage=settings.IDLE_MIN_COVERAGE)
        if not (0 < criteria.cpu_pct <= 100) or math.isnan(criteria.cpu_pct):
            raise ValidationFailed("The CPU threshold is a percentage above 0 and at most 100.", field="cpu_pct")
        if not (0 < criteria.days <= 366) or math.isnan(criteria.days):
            raise ValidationFailed("Days must be above 0 and at most 366.", field="days")
        return criteria


def idle_vms(*, actor: Actor, now: datetime | None = None, cpu_pct: float | None = None,
             days: float | None = None) -> list[IdleVM]:
    """Running VMs whose average CPU over the last `days` days stayed below `cpu_pct` (settings IDLE_*), whose
    samples say they ran for at least IDLE_MIN_COVERAGE of that time (a VM started yesterday is not judged
    on three days). Quietest first. Administrators only."""
    require_admin(actor, "Only administrators can list idle VMs.")
    criteria = IdleCriteria.from_settings(cpu_pct=cpu_pct, days=days)
    now = now or timezone.now()
    window = Period(now - timedelta(days=criteria.days), now)
    samples = VMSample.objects.filter(vm__status=VMStatus.RUNNING)
    acc, _plan = _accumulate(window, subject="vm", samples=samples)
    needed = criteria.coverage * (window.end - window.start).total_seconds()
    found: dict[int, tuple[float, float]] = {}
    for (vm_id, _flag), hours in acc.items():
        seconds = sum(s[0] for s in hours.values())
        cpu = sum(s[4] for s in hours.values())
        if seconds >= needed and seconds > 0 and cpu / seconds < criteria.cpu_pct:
            found[vm_id] = (cpu / seconds, seconds / 3600)
    vms = VM.objects.filter(pk__in=list(found), status=VMStatus.RUNNING).select_related("owner", "group", "host")
    idle = [IdleVM(vm=vm, avg_cpu_pct=found[vm.pk][0], sampled_hours=found[vm.pk][1]) for vm in vms]
    idle.sort(key=lambda i: (i.avg_cpu_pct, i.vm.name))
    return idle
