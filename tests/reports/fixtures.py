"""Rows for report tests: VMs and their samples written directly (the collector is not under test here)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cluster.models import Host
from monitoring.models import VMSample
from vms.models import VM

T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)  # a Monday, midnight UTC: the fixtures' clock starts here


def host(name: str = "rep-host", *, cpus: int = 16, memory_mib: int = 65536) -> Host:
    return Host.objects.create(name=name, uri=f"test:///{name}-never-dialled", status="up", cpus=cpus,
                               memory_mib=memory_mib)


def vm(owner, on: Host, *, name: str, group=None, vcpus: int = 2, memory_mib: int = 2048, disk_gib: int = 10,
       status: str = "running") -> VM:
    return VM.objects.create(name=name, owner=owner, group=group, host=on, vcpus=vcpus, memory_mib=memory_mib,
                             disk_gib=disk_gib, status=status, power_state=status)


def hourly(machine: VM, start: datetime, hours: int, *, seconds: float = 3600, cpu_pct: float = 50.0,
           on: Host | None = None, vcpus: int | None = None) -> None:
    """Hourly rollups for `hours` whole hours from `start` (each row ends at the end of its hour)."""
    VMSample.objects.bulk_create(VMSample(
        vm=machine, host=on or machine.host, resolution="1h", at=start + timedelta(hours=i + 1), seconds=seconds,
        cpu_pct=cpu_pct, vcpus=vcpus or machine.vcpus, memory_mib=machine.memory_mib, disk_gib=machine.disk_gib)
        for i in range(hours))


def five_min(machine: VM, start: datetime, count: int, *, seconds: float = 300, cpu_pct: float = 50.0) -> None:
    """5-minute rollups for `count` intervals from `start`."""
    VMSample.objects.bulk_create(VMSample(
        vm=machine, host=machine.host, resolution="5m", at=start + timedelta(minutes=5 * (i + 1)), seconds=seconds,
        cpu_pct=cpu_pct, vcpus=machine.vcpus, memory_mib=machine.memory_mib, disk_gib=machine.disk_gib)
        for i in range(count))


def raw(machine: VM, start: datetime, count: int, *, every: float = 10, cpu_pct: float = 50.0) -> None:
    """Raw samples every `every` seconds for `count` intervals from `start` (the VM ran the whole interval)."""
    VMSample.objects.bulk_create(VMSample(
        vm=machine, host=machine.host, resolution="raw", at=start + timedelta(seconds=every * (i + 1)),
        seconds=every, cpu_pct=cpu_pct, vcpus=machine.vcpus, memory_mib=machine.memory_mib,
        disk_gib=machine.disk_gib) for i in range(count))
