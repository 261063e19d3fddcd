"""Downsampling and retention with fixed times (issue #14 part 2): raw -> 5-minute -> hourly rows
(averages weighted by the seconds run, seconds summed), only complete buckets, idempotent, catching up
after a gap, and each resolution pruned after its keep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from monitoring.models import HostSample, Resolution, VMSample
from monitoring.rollup import bucket_end, samples_maintain
from vms.choices import VMStatus
from vms.models import VM

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def vm(test_host, alice):
    return VM.objects.create(owner=alice, host=test_host, name="r", vcpus=2, memory_mib=512, disk_gib=4,
                             status=VMStatus.RUNNING)


def raw(vm, at: datetime, cpu: float, *, seconds: float = 30, mem: int | None = None, rd: float = 0) -> VMSample:
    return VMSample.objects.create(vm=vm, host=vm.host, at=at, seconds=seconds, cpu_pct=cpu, vcpus=vm.vcpus,
                                   memory_mib=vm.memory_mib, disk_gib=vm.disk_gib, mem_used_bytes=mem,
                                   disk_read_bps=rd)


def test_buckets_end_on_five_minute_and_hour_boundaries():
    assert bucket_end(T0, 300) == T0  # (11:55, 12:00]
    assert bucket_end(T0 + timedelta(seconds=1), 300) == T0 + timedelta(minutes=5)
    assert bucket_end(T0 + timedelta(minutes=59), 3600) == T0 + timedelta(hours=1)


def test_raw_samples_roll_into_five_minute_rows_then_hourly(vm, test_host):
    for i in range(10):  # 12:00:30 .. 12:05:00: the bucket ending 12:05
        raw(vm, T0 + timedelta(seconds=30 * (i + 1)), cpu=10.0 if i < 5 else 30.0, mem=100 if i else None, rd=1000)
    raw(vm, T0 + timedelta(minutes=5, seconds=30), cpu=90.0, seconds=15)  # the next bucket, 12:10
    HostSample.objects.create(host=test_host, at=T0 + timedelta(seconds=30), seconds=30, cpu_pct=40,
                              mem_total_bytes=8, mem_used_bytes=4, running_domains=3)

    # 12:08: the 12:05 bucket is complete (plus the grace), the 12:10 one is not.
    result = samples_maintain(now=T0 + timedelta(minutes=8))
    assert result["vm_5m"] == 1 and result["host_5m"] == 1
    row = VMSample.objects.get(vm=vm, resolution=Resolution.FIVE_MIN)
    assert row.at == T0 + timedelta(minutes=5) and row.seconds == 300
    assert row.cpu_pct == pytest.approx(20.0) and row.disk_read_bps == pytest.approx(1000)
    assert row.mem_used_bytes == 100  # averaged over the samples that had it
    assert (row.vcpus, row.memory_mib, row.disk_gib, row.host_id) == (2, 512, 4, test_host.pk)
    assert HostSample.objects.get(resolution=Resolution.FIVE_MIN).cpu_pct == 40

    # Run again: nothing new. Later: the 12:10 bucket, then the 13:00 hour.
    assert samples_maintain(now=T0 + timedelta(minutes=8))["vm_5m"] == 0
    assert samples_maintain(now=T0 + timedelta(minutes=12))["vm_5m"] == 1
    hour = samples_maintain(now=T0 + timedelta(hours=1, minutes=2))
    assert hour["vm_1h"] == 1
    h = VMSample.objects.get(vm=vm, resolution=Resolution.HOUR)
    assert h.at == T0 + timedelta(hours=1) and h.seconds == 315
    assert h.cpu_pct == pytest.approx((20.0 * 300 + 90.0 * 15) / 315)  # weighted by the seconds run


def test_a_gap_longer_than_a_pass_is_caught_up(vm):
    raw(vm, T0 + timedelta(seconds=30), cpu=5)
    raw(vm, T0 + timedelta(days=2, seconds=30), cpu=7)  # the VM ran again two days later
    now = T0 + timedelta(days=2, minutes=10)
    samples_maintain(now=now)
    samples_maintain(now=now)
    assert list(VMSample.objects.filter(resolution=Resolution.FIVE_MIN).order_by("at").values_list("cpu_pct", flat=True)) \
        == [5, 7]


def test_each_resolution_is_kept_for_its_own_time(vm, settings):
    settings.METRICS_RETENTION_RAW_HOURS, settings.METRICS_RETENTION_5M_DAYS, settings.METRICS_RETENTION_1H_DAYS = 24, 14, 400
    now = T0 + timedelta(days=500)
    for resolution, ages in {Resolution.RAW: [23, 25], Resolution.FIVE_MIN: [13 * 24, 15 * 24],
                             Resolution.HOUR: [399 * 24, 401 * 24]}.items():
        for hours in ages:
            VMSample.objects.create(vm=vm, resolution=resolution, at=now - timedelta(hours=hours), seconds=1)
    deleted = samples_maintain(now=now)["deleted"]
    assert deleted == 3
    kept = {(r, round((now - at).total_seconds() / 3600)) for r, at in VMSample.objects.values_list("resolution", "at")
            if r != Resolution.FIVE_MIN or (now - at) > timedelta(days=1)}
    assert {(Resolution.RAW, 23), (Resolution.FIVE_MIN, 13 * 24), (Resolution.HOUR, 399 * 24)} <= kept
    assert not {(Resolution.RAW, 25), (Resolution.FIVE_MIN, 15 * 24), (Resolution.HOUR, 401 * 24)} & kept
