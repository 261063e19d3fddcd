"""Usage reports count what the samples say, by hand: VM-hours, vCPU-hours, GiB-hours, peaks against quotas,
the period's edges, the choice of resolution without double counting, deleted VMs and group changes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth.models import Group

from monitoring.models import VMSample
from portal.exceptions import PermissionDenied, ValidationFailed
from quotas.models import Quota
from reports.usage import Period, period_parse, usage_plan, usage_report
from vms.models import VM

from .fixtures import T0, five_min, host, hourly, raw, vm

pytestmark = pytest.mark.django_db

H = timedelta(hours=1)
M = timedelta(minutes=1)


def row(report, name):
    rows = {r.name: r for r in report.rows}
    assert name in rows, f"{name} not in {sorted(rows)}"
    return rows[name]


def peak(r, resource):
    return next(p for p in r.peaks if p.resource == resource)


def test_whole_hours_per_user_from_hourly_rollups(alice, bob, admin_user):
    """alice's VM (2 vCPUs, 2 GiB, 10 GiB disk) ran 10 whole hours; bob's (1 vCPU, 1 GiB, 5 GiB) half of each of
    4 hours: 10 VM-h, 20 vCPU-h, 20 GiB-h memory, 100 GiB-h disk and 2, 2, 2, 10."""
    h = host()
    hourly(vm(alice, h, name="a1"), T0, 10)
    hourly(vm(bob, h, name="b1", vcpus=1, memory_mib=1024, disk_gib=5), T0, 4, seconds=1800, cpu_pct=20)
    report = usage_report(actor=admin_user, by="user", period=Period(T0, T0 + timedelta(days=1)))
    assert [r.name for r in report.rows] == ["alice", "bob"]  # most vCPU-hours first
    a, b = row(report, "alice"), row(report, "bob")
    assert (a.vms, a.vm_hours, a.vcpu_hours, a.memory_gib_hours, a.disk_gib_hours) == (1, 10, 20, 20, 100)
    assert (b.vms, b.vm_hours, b.vcpu_hours, b.memory_gib_hours, b.disk_gib_hours) == (1, 2, 2, 2, 10)
    assert a.avg_cpu_pct == pytest.approx(50) and b.avg_cpu_pct == pytest.approx(20)
    assert report.totals == {"vm_hours": 12, "vcpu_hours": 22, "memory_gib_hours": 22, "disk_gib_hours": 110}


def test_rows_straddling_the_edges_count_the_part_inside(alice, admin_user):
    """Only hourly rows: from 00:30 to 05:15 counts half of the first hour, four whole ones, a quarter of the
    sixth: 4.75 VM-hours, 9.5 vCPU-hours; nothing before or after."""
    hourly(vm(alice, host(), name="a1"), T0, 8)
    report = usage_report(actor=admin_user, by="user", period=Period(T0 + 30 * M, T0 + 5 * H + 15 * M))
    a = row(report, "alice")
    assert a.vm_hours == pytest.approx(4.75) and a.vcpu_hours == pytest.approx(9.5)
    assert [p.resolution for p in report.plan] == ["1h", "1h", "1h"]


def test_finer_rows_at_the_edges_and_after_the_rollups_are_counted_once(alice, admin_user):
    """The VM ran from 00:00 to 02:40 without a break. Hourly rollups exist up to 02:00, 5-minute ones up to 02:30,
    raw samples (every 10 s) from 02:20 to 02:40: from 00:12 to 02:40 is 148 minutes, each counted once —
    48 min from 5-minute rows (one straddling 00:12 counts 3 of its 5 minutes), 60 from the hourly row, 30 from
    5-minute rows, 10 from raw samples."""
    machine = vm(alice, host(), name="a1", vcpus=3)
    hourly(machine, T0, 2)
    five_min(machine, T0, 30)
    raw(machine, T0 + 2 * H + 20 * M, 120)
    period = Period(T0 + 12 * M, T0 + 2 * H + 40 * M)
    plan = usage_plan(period)
    assert [(p.start, p.end, p.resolution) for p in plan] == [
        (T0 + 12 * M, T0 + H, "5m"), (T0 + H, T0 + 2 * H, "1h"), (T0 + 2 * H, T0 + 2 * H + 30 * M, "5m"),
        (T0 + 2 * H + 30 * M, T0 + 2 * H + 40 * M, "raw")]
    a = row(usage_report(actor=admin_user, by="user", period=period), "alice")
    assert a.vm_hours == pytest.approx(148 / 60)
    assert a.vcpu_hours == pytest.approx(3 * 148 / 60)


def test_raw_samples_alone_when_they_reach_back(alice, admin_user):
    """A recent period inside raw retention is read from raw samples only (5-minute and hourly rows of the same
    time are not added): 30 minutes of a 10-second series from 00:00, period 00:05 to 00:25 = 20 minutes."""
    machine = vm(alice, host(), name="a1")
    raw(machine, T0, 180)
    five_min(machine, T0, 6)
    a = row(usage_report(actor=admin_user, by="user", period=Period(T0 + 5 * M, T0 + 25 * M)), "alice")
    assert a.vm_hours == pytest.approx(20 / 60)


def test_deleted_vms_still_count_for_the_time_they_ran(alice, admin_user):
    machine = vm(alice, host(), name="gone", status="deleted")
    hourly(machine, T0, 3)
    VM.objects.filter(pk=machine.pk).update(deleted_at=T0 + 3 * H)
    a = row(usage_report(actor=admin_user, by="user", period=Period(T0, T0 + 6 * H)), "alice")
    assert (a.vms, a.vm_hours, a.vcpu_hours) == (1, 3, 6)


def test_groups_count_their_team_vms_and_membership_changes_move_nothing(make_user, admin_user):
    """carol made a team VM for 'lab' (4 h) and a personal one (2 h), then left the group: the team VM's hours
    stay the group's, both stay carol's as their owner, and the personal VM is no group's."""
    carol = make_user("carol")
    lab = Group.objects.create(name="lab")
    carol.groups.add(lab)
    h = host()
    hourly(vm(carol, h, name="team-vm", group=lab), T0, 4)
    hourly(vm(carol, h, name="own-vm", vcpus=1), T0, 2)
    carol.groups.remove(lab)
    period = Period(T0, T0 + 8 * H)
    groups = usage_report(actor=admin_user, by="group", period=period)
    assert [(r.name, r.vm_hours, r.vcpu_hours) for r in groups.rows] == [("lab", 4, 8)]
    c = row(usage_report(actor=admin_user, by="user", period=period), "carol")
    assert (c.vms, c.vm_hours, c.vcpu_hours) == (2, 6, 10)


def test_peaks_against_quota_per_user_group_and_host(alice, admin_user):
    """alice's personal VMs: A (2 vCPUs) hours 0-4, B (1 vCPU) hours 2-6: the busiest hour has 2 VMs and 3 vCPUs
    of her quota's 3 VMs and 4 vCPUs. Her team VM (4 vCPUs) counts on the group's quota, not hers."""
    team = Group.objects.create(name="team")
    Quota.objects.create(group=team, max_vms=5, max_vcpus=8, max_memory_mib=8192, max_disk_gib=100)
    h = host(cpus=8, memory_mib=16384)
    a = vm(alice, h, name="a", vcpus=2, memory_mib=1024, disk_gib=4)
    b = vm(alice, h, name="b", vcpus=1, memory_mib=512, disk_gib=4)
    t = vm(alice, h, name="t", group=team, vcpus=4, memory_mib=2048, disk_gib=10)
    hourly(a, T0, 4)
    hourly(b, T0 + 2 * H, 4)
    hourly(t, T0, 6, seconds=1800)  # half of each hour: an hourly average of half a VM
    period = Period(T0, T0 + 6 * H)
    user = row(usage_report(actor=admin_user, by="user", period=period), "alice")
    assert (peak(user, "vms").peak, peak(user, "vms").limit, peak(user, "vms").percent) == (2, 3, 67)
    assert (peak(user, "vcpus").peak, peak(user, "vcpus").limit, peak(user, "vcpus").percent) == (3, 4, 75)
    assert peak(user, "memory_gib").peak == pytest.approx(1.5) and peak(user, "memory_gib").limit == 2
    assert peak(user, "disk_gib").peak == 8
    group = row(usage_report(actor=admin_user, by="group", period=period), "team")
    assert (peak(group, "vms").peak, peak(group, "vcpus").peak, peak(group, "vcpus").limit) == (0.5, 2, 8)
    on_host = row(usage_report(actor=admin_user, by="host", period=period), "rep-host")
    # hours 2-4: A (2) + B (1) + half of T (4): 5 vCPUs of the host's 8
    assert (peak(on_host, "vcpus").peak, peak(on_host, "vcpus").limit) == (5, 8)
    assert peak(on_host, "vms").limit is None


def test_default_quota_when_the_subject_has_no_row(make_user, admin_user):
    dave = make_user("dave")
    hourly(vm(dave, host(), name="d", vcpus=1), T0, 1)
    d = row(usage_report(actor=admin_user, by="user", period=Period(T0, T0 + H)), "dave")
    assert peak(d, "vcpus").limit == settings.DEFAULT_QUOTA["max_vcpus"]


def test_hosts_count_where_the_vm_ran(alice, admin_user):
    """A VM migrated after 2 hours on h1 to h2 for 3 more: 2 VM-hours on h1, 3 on h2."""
    h1, h2 = host("h1"), host("h2")
    machine = vm(alice, h1, name="mover")
    hourly(machine, T0, 2)
    hourly(machine, T0 + 2 * H, 3, on=h2)
    report = usage_report(actor=admin_user, by="host", period=Period(T0, T0 + 5 * H))
    assert [(r.name, r.vm_hours) for r in report.rows] == [("h2", 3), ("h1", 2)]


def test_a_vm_that_did_not_run_in_the_period_is_not_counted(alice, admin_user):
    machine = vm(alice, host(), name="a1")
    hourly(machine, T0, 2)
    hourly(machine, T0 + 10 * H, 2)
    VMSample.objects.filter(at=T0 + 2 * H).update(seconds=0)  # stopped in its second hour
    a = row(usage_report(actor=admin_user, by="user", period=Period(T0, T0 + 4 * H)), "alice")
    assert a.vm_hours == 1
    assert usage_report(actor=admin_user, by="user", period=Period(T0 + 3 * H, T0 + 9 * H)).rows == []


def test_only_administrators_read_reports(alice):
    with pytest.raises(PermissionDenied, match="Only administrators"):
        usage_report(actor=alice, by="user", period=Period(T0, T0 + H))


def test_period_parsing():
    period = period_parse(start="2026-11-02", end="2026-11-03")
    assert period.start.isoformat() == "2026-11-02T00:00:00+00:00"
    assert period.end.isoformat() == "2026-11-04T00:00:00+00:00"  # 'to' a date includes that day
    assert period_parse(start="2026-11-02T08:30:00Z", end="2026-11-02T09:00:00Z").hours == 0.5
    with pytest.raises(ValidationFailed, match="'from' must be a date"):
        period_parse(start="yesterday", end=None)
    with pytest.raises(ValidationFailed, match="'to' must be a date"):
        period_parse(start=None, end="2026-13-45")
    for end in ("9999-12-31", "9999-12-30T23:00:00"):
        # A well-formed date, so not "must be a date": too far ahead.
        with pytest.raises(ValidationFailed, match="'to' is too far in the future"):
            period_parse(start="2026-11-02", end=end)
    with pytest.raises(ValidationFailed, match="must be after"):
        period_parse(start="2026-11-03", end="2026-11-01")
