"""The collector on qemu:///system with the busybox guest (issue #14 part 2): the counters the bulk
listing reads move with what the guest does. Idle, its CPU use is low; with a busy loop typed on its
serial console it is clearly higher; a read of its disk shows as disk throughput. One guest, short."""

from __future__ import annotations

import pytest

from monitoring.collector import samples_record
from monitoring.models import HostSample, VMSample
from portal.hypervisor import get_driver
from portal.models import Job
from tests.guest_shell import GuestShell
from tests.support import wait_for
from vms import services
from vms.models import VM

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(300)]


def _sample(host, vm) -> VMSample | None:
    """One collector interval now (the listing with counters, as the monitor asks it); the VM's new sample."""
    before = VMSample.objects.filter(vm=vm).order_by("-at").values_list("pk", flat=True).first()
    samples_record(host=host, domains=get_driver(host.uri).list_domain_states(stats=True))
    latest = VMSample.objects.filter(vm=vm).order_by("-at").first()
    return latest if latest is not None and latest.pk != before else None


def _settled(host, vm, predicate, what: str, timeout: float = 60) -> VMSample:
    """Sample about every 2 s until one (over at least 2 s) satisfies `predicate`."""
    seen: list[str] = []

    def attempt():
        sample = _sample(host, vm)
        if sample is not None:
            seen.append(f"{sample.cpu_pct:.1f}%/{sample.seconds:.1f}s rd={sample.disk_read_bps:.0f}")
        return sample if sample is not None and sample.seconds >= 1.5 and predicate(sample) else None
    try:
        return wait_for(attempt, timeout, what, poll=2.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; samples: {seen}") from None


def test_cpu_and_disk_use_move_when_the_guest_works(qemu_host, guest_image, alice):
    result = services.vm_create(actor=alice, via="api", name="busy-1", image=guest_image, vcpus=1,
                                memory_mib=128, disk_gib=1)
    job = Job.objects.get(pk=result.job.pk)
    assert job.status == "succeeded", job.error
    vm = VM.objects.get(pk=result.vm.pk)
    driver = get_driver(qemu_host.uri)
    with driver.counting_calls() as calls:
        listing = driver.list_domain_states(stats=True)
    assert calls.by_name == {"getAllDomainStats": 1}, calls.by_name  # the counters cost no extra call
    stats = next(d.stats for d in listing if d.uuid == str(vm.uuid))
    assert stats is not None and stats.cpu_time_ns and stats.vcpus == 1 and stats.balloon_current_kib

    with GuestShell(qemu_host.uri, str(vm.uuid)) as shell:
        shell.wait_ready(timeout=180)
        _sample(qemu_host, vm)  # the first reading: no rates yet
        idle = _settled(qemu_host, vm, lambda s: s.cpu_pct < 30, "an idle sample")
        assert shell.run("(while :; do :; done) >/dev/null 2>&1 & echo $! > /tmp/busy; echo started").output.strip() \
            == "started"
        # The guest's one vCPU spins: most of a host CPU (less on a loaded machine), far above idle.
        busy = _settled(qemu_host, vm, lambda s: s.cpu_pct > max(40.0, idle.cpu_pct * 3), "a busy sample")
        print(f"cpu: idle {idle.cpu_pct:.1f} %, busy {busy.cpu_pct:.1f} %")
        assert (busy.vcpus, busy.memory_mib, busy.host_id) == (1, 128, qemu_host.pk)
        shell.run("kill $(cat /tmp/busy)")

        _sample(qemu_host, vm)  # a reading just before the read: the next sample covers it
        assert shell.run("dd if=/dev/vda of=/dev/null bs=1M count=24 2>/dev/null; echo read").output.strip() == "read"
        reading = wait_for(lambda: _sample(qemu_host, vm), 10, "a sample after the read")
        print(f"disk: {reading.disk_read_bps * reading.seconds / 2**20:.1f} MiB read in {reading.seconds:.1f} s")
        assert reading.disk_read_bps * reading.seconds >= 16 * 1024 * 1024  # most of the 24 MiB came from the disk
    host = HostSample.objects.filter(host=qemu_host).order_by("-at").first()
    assert host is not None and host.running_domains >= 1 and host.mem_total_bytes > 0
