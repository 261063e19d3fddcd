"""The collector (issue #14 part 2): rates from cumulative counters, counter resets, the first sample
after a restart of the monitor, the samples and readings it writes, and what it costs a host: no
libvirt call beyond the reconcile's one getAllDomainStats, a constant number of queries."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cluster.observers import registered
from cluster.services import host_sync
from monitoring.collector import (
    Reading,
    SampleObserver,
    memory_used_bytes,
    rates_between,
    restarted,
    samples_record,
)
from monitoring.models import DomainCounters, HostSample, Resolution, VMSample
from portal.choices import Via
from portal.hypervisor import DomainState, DomainStats, PowerState
from vms.choices import VMStatus
from vms.models import VM
from vms.services import vm_create

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
GiB = 1024 ** 3


def reading(at: datetime, *, cpu: int | None = 0, rd: int = 0, wr: int = 0, rx: int = 0, tx: int = 0,
            domain_id: int = 7) -> Reading:
    return Reading(at=at, domain_id=domain_id, cpu_time_ns=cpu, rd_bytes=rd, wr_bytes=wr, rx_bytes=rx, tx_bytes=tx)


def test_rates_are_counter_differences_over_the_time_between_readings():
    prev = reading(T0, cpu=10 * 10**9, rd=1000, wr=2000, rx=300, tx=400)
    cur = reading(T0 + timedelta(seconds=30), cpu=25 * 10**9, rd=1000 + 30 * 4096, wr=2000 + 30 * 100,
                  rx=300 + 30 * 50, tx=400 + 30 * 10)
    rates = rates_between(prev, cur, vcpus=2, max_gap=600)
    assert rates is not None
    assert rates.seconds == 30
    assert rates.cpu_pct == pytest.approx(25.0)  # 15 s of CPU in 30 s on 2 vCPUs
    assert rates.cpu_ns == 15 * 10**9
    assert (rates.disk_read_bps, rates.disk_write_bps) == (pytest.approx(4096), pytest.approx(100))
    assert (rates.net_rx_bps, rates.net_tx_bps) == (pytest.approx(50), pytest.approx(10))


def test_cpu_is_capped_at_the_vcpus_and_unknown_cpu_time_is_zero():
    prev, cur = reading(T0, cpu=0), reading(T0 + timedelta(seconds=10), cpu=50 * 10**9)
    assert rates_between(prev, cur, vcpus=1, max_gap=600).cpu_pct == 100.0
    assert rates_between(reading(T0, cpu=None), reading(T0 + timedelta(seconds=10), cpu=None),
                         vcpus=1, max_gap=600).cpu_pct == 0.0


def test_a_restarted_domain_counts_from_its_new_start():
    prev = reading(T0, cpu=500 * 10**9, rd=10**9, domain_id=7)
    # Same id, but the counters went down: it was started again (the counters are since then).
    cur = reading(T0 + timedelta(seconds=20), cpu=5 * 10**9, rd=20 * 1000, domain_id=7)
    assert restarted(prev, cur)
    rates = rates_between(prev, cur, vcpus=1, max_gap=600)
    assert rates.cpu_pct == pytest.approx(25.0) and rates.disk_read_bps == pytest.approx(1000)
    # A new domain id alone says so too, even with counters that happen to be higher.
    bigger = reading(T0 + timedelta(seconds=20), cpu=600 * 10**9, rd=2 * 10**9, domain_id=8)
    assert restarted(prev, bigger)
    assert rates_between(prev, bigger, vcpus=1, max_gap=600).cpu_pct == 100.0
    assert not restarted(prev, reading(T0 + timedelta(seconds=20), cpu=501 * 10**9, rd=10**9, domain_id=7))


def test_no_rates_without_a_usable_previous_reading():
    cur = reading(T0, cpu=10**9)
    assert rates_between(None, cur, vcpus=1, max_gap=600) is None
    assert rates_between(reading(T0 - timedelta(seconds=601)), cur, vcpus=1, max_gap=600) is None  # too old
    assert rates_between(reading(T0), cur, vcpus=1, max_gap=600) is None  # same moment
    assert rates_between(reading(T0 + timedelta(seconds=1)), cur, vcpus=1, max_gap=600) is None  # from the future


def test_memory_in_use_comes_from_the_guests_balloon_statistics():
    assert memory_used_bytes(DomainStats(balloon_available_kib=1024 * 1024, balloon_unused_kib=256 * 1024)) == 768 * 1024**2
    assert memory_used_bytes(DomainStats(balloon_current_kib=1024 * 1024)) is None  # no guest statistics


def _stats(cpu_s: float, *, domain_id: int = 3, rd: int = 0, rx: int = 0, vcpus: int = 1) -> DomainStats:
    return DomainStats(domain_id=domain_id, cpu_time_ns=int(cpu_s * 1e9), vcpus=vcpus, balloon_current_kib=131072,
                       balloon_available_kib=131072, balloon_unused_kib=65536, rd_bytes=rd, wr_bytes=0, rx_bytes=rx,
                       tx_bytes=0)


def _vms(owner, count: int, host=None) -> list:
    """Real VMs (domains on the test driver) when no host is given; else rows only, for the collector's
    own arithmetic (it reads VMs by their domains' UUIDs, the listing is given)."""
    if host is None:
        return [vm_create(actor=owner, via=Via.API, name=f"m-{i}", vcpus=1, memory_mib=128, disk_gib=1).vm
                for i in range(count)]
    return VM.objects.bulk_create([VM(owner=owner, host=host, name=f"r-{i}", vcpus=1, memory_mib=128, disk_gib=1,
                                      status=VMStatus.RUNNING, domain_name=f"r-{i}") for i in range(count)])


@pytest.mark.django_db(transaction=True)
def test_two_readings_make_a_sample_and_the_readings_survive_a_new_collector(test_host, alice):
    test_host.cpus, test_host.memory_mib, test_host.free_memory_mib = 4, 8192, 2048
    vm = _vms(alice, 1, test_host)[0]
    foreign = str(uuid.uuid4())
    stopped = DomainState(name="off", uuid=str(uuid.uuid4()), state=PowerState.SHUTOFF)

    def domains(cpu_vm: float, cpu_foreign: float, rd: int) -> list[DomainState]:
        return [DomainState(name=vm.domain_name, uuid=str(vm.uuid), state=PowerState.RUNNING,
                            stats=_stats(cpu_vm, rd=rd, rx=rd // 2)),
                DomainState(name="foreign", uuid=foreign, state=PowerState.RUNNING, stats=_stats(cpu_foreign)),
                stopped]

    first = samples_record(host=test_host, domains=domains(100, 50, 10**6), now=T0)
    assert (first.vm_samples, first.host_sample, first.running) == (0, False, 2)  # nothing to compare with yet
    assert DomainCounters.objects.filter(host=test_host).count() == 3  # two domains and the host's own row

    # A new collector (the monitor restarted) goes on from the stored readings.
    second = samples_record(host=test_host, domains=domains(115, 53, 10**6 + 30 * 2048), now=T0 + timedelta(seconds=30))
    assert (second.vm_samples, second.host_sample) == (1, True)
    sample = VMSample.objects.get(vm=vm)
    assert sample.resolution == Resolution.RAW and sample.at == T0 + timedelta(seconds=30)
    assert sample.cpu_pct == pytest.approx(50.0) and sample.seconds == 30
    assert sample.disk_read_bps == pytest.approx(2048) and sample.net_rx_bps == pytest.approx(1024)
    assert sample.mem_used_bytes == 64 * 1024**2 and (sample.vcpus, sample.memory_mib, sample.disk_gib) == (1, 128, 1)
    host = HostSample.objects.get(host=test_host)
    assert host.cpu_pct == pytest.approx((15 + 3) / (30 * 4) * 100)  # both domains' CPU, of the host's 4 CPUs
    assert host.running_domains == 2 and host.mem_total_bytes == 8 * GiB and host.mem_used_bytes == 6 * GiB
    assert host.disk_read_bps == pytest.approx(2048)

    # The VM restarted (new id, counters from zero); the foreign domain stopped: its reading goes.
    third = samples_record(host=test_host, now=T0 + timedelta(seconds=60), domains=[
        DomainState(name=vm.domain_name, uuid=str(vm.uuid), state=PowerState.RUNNING, stats=_stats(6, domain_id=9))])
    assert third.vm_samples == 1
    assert VMSample.objects.get(vm=vm, at=T0 + timedelta(seconds=60)).cpu_pct == pytest.approx(20.0)
    assert set(DomainCounters.objects.filter(host=test_host).values_list("uuid", flat=True)) == {"", str(vm.uuid)}


@pytest.mark.django_db(transaction=True)
def test_the_queries_per_interval_do_not_grow_with_the_domains(test_host, alice):
    def queries(vms: list, start: datetime) -> int:
        def listing(cpu: float) -> list[DomainState]:
            return [DomainState(name=v.domain_name, uuid=str(v.uuid), state=PowerState.RUNNING, stats=_stats(cpu))
                    for v in vms]
        samples_record(host=test_host, domains=listing(1), now=start)
        with CaptureQueriesContext(connection) as ctx:
            result = samples_record(host=test_host, domains=listing(2), now=start + timedelta(seconds=30))
        assert result.vm_samples == len(vms)
        return len(ctx.captured_queries)

    vms = _vms(alice, 40, test_host)
    few = queries(vms[:2], T0)
    many = queries(vms, T0 + timedelta(minutes=5))
    assert few == many, (few, many)
    assert many <= 8


def test_the_collector_is_a_registered_observer_that_claims_nothing():
    assert any(isinstance(o, SampleObserver) for o in registered())


@pytest.mark.django_db(transaction=True)
def test_sampling_rides_on_the_reconciles_single_listing_call(test_host, alice, driver, settings):
    """On the test driver: the reconcile that samples makes the same libvirt calls as one that does not
    (one getAllDomainStats, with more stat groups asked), and leaves its readings for the next one."""
    settings.METRICS_INTERVAL_SECONDS = 3600
    _vms(alice, 3)
    observer = next(o for o in registered() if isinstance(o, SampleObserver))
    host_sync(host=test_host)  # the first reconcile reads the foreign domains' metadata once
    observer._last.pop(test_host.pk, None)  # due now
    with driver.counting_calls() as sampling:
        host_sync(host=test_host)
    assert DomainCounters.objects.filter(host=test_host, uuid="").exists()  # it sampled
    with driver.counting_calls() as plain:  # not due again for an hour
        host_sync(host=test_host)
    assert sampling.by_name.get("getAllDomainStats") == 1, sampling.by_name
    assert sampling.by_name == plain.by_name, (sampling.by_name, plain.by_name)
