"""A host busy with a VM (libvirt's state change lock) is retried inside the job, with backoff."""

from __future__ import annotations

import pytest

from portal import jobs
from portal.choices import JobStatus
from portal.exceptions import HypervisorBusy
from portal.hypervisor import get_driver
from portal.models import Job
from vms import services
from vms.choices import VMStatus
from vms.models import VM

pytestmark = pytest.mark.django_db(transaction=True)

LOCK = ("reboot 1234: Timed out during operation: cannot acquire state change lock "
        "(held by monitor=remoteDispatchDomainBlockJobAbort)")


@pytest.fixture
def sleeps(monkeypatch, settings):
    """The backoff waits a job asked for (recorded instead of slept)."""
    settings.JOB_TRANSIENT_RETRIES = 3
    settings.JOB_TRANSIENT_DELAY_SECONDS = 1.5
    waited: list[float] = []
    monkeypatch.setattr(jobs, "_sleep", waited.append)
    return waited


def _busy_then_ok(failures: int) -> tuple[list[int], jobs.Handler]:
    calls: list[int] = []

    def run(ctx: jobs.JobContext) -> dict:
        calls.append(ctx.retry)
        ctx.progress(40, "Doing the thing")
        if len(calls) <= failures:
            raise HypervisorBusy(detail=LOCK)
        return {"calls": len(calls)}

    return calls, jobs.Handler(run)


def test_a_handler_busy_twice_is_run_again_with_backoff_and_succeeds(alice, monkeypatch, sleeps):
    calls, handler = _busy_then_ok(failures=2)
    monkeypatch.setitem(jobs.HANDLERS, "test.busy", handler)

    job = Job.objects.get(pk=jobs.job_create(kind="test.busy", actor=alice, via="api").pk)

    assert job.status == JobStatus.SUCCEEDED and job.result == {"calls": 3}
    assert calls == [0, 1, 2]  # ctx.retry tells the handler it is a re-run
    assert sleeps == [1.5, 3.0]  # exponential backoff
    assert job.attempts == 1 and job.error == "" and job.error_detail == ""
    assert "The host is busy with this VM; retry 1 of 3 in 1.5 s" in job.log
    assert "The host is busy with this VM; retry 2 of 3 in 3 s" in job.log


def test_a_host_busy_every_time_fails_the_job_in_plain_words_after_the_retries(alice, monkeypatch, sleeps):
    calls, handler = _busy_then_ok(failures=99)
    monkeypatch.setitem(jobs.HANDLERS, "test.busy", handler)

    job = Job.objects.get(pk=jobs.job_create(kind="test.busy", actor=alice, via="api").pk)

    assert job.status == JobStatus.FAILED
    assert len(calls) == 4 and sleeps == [1.5, 3.0, 6.0]
    assert job.error == "The host was busy with this VM; try again in a minute."
    assert job.error_detail == LOCK  # libvirt's words: administrators only
    assert "still busy after 3 retries" in job.log


def test_no_retries_when_switched_off(alice, monkeypatch, sleeps, settings):
    settings.JOB_TRANSIENT_RETRIES = 0
    calls, handler = _busy_then_ok(failures=1)
    monkeypatch.setitem(jobs.HANDLERS, "test.busy", handler)

    job = Job.objects.get(pk=jobs.job_create(kind="test.busy", actor=alice, via="api").pk)

    assert job.status == JobStatus.FAILED and len(calls) == 1 and sleeps == []


def _busy_reboot(monkeypatch, failures: int) -> list[str]:
    """The test driver's reboot refuses with libvirt's state change lock `failures` times."""
    driver = get_driver("test:///default")
    real = driver.reboot
    seen: list[str] = []

    def reboot(uuid: str) -> None:
        seen.append(uuid)
        if len(seen) <= failures:
            raise HypervisorBusy(detail=LOCK)
        real(uuid)

    monkeypatch.setattr(driver, "reboot", reboot)
    return seen


def test_a_reboot_on_a_busy_host_is_retried_and_the_vm_ends_running(test_host, alice, monkeypatch, sleeps):
    vm = services.vm_create(actor=alice, via="api", name="web-1", vcpus=1, memory_mib=128, disk_gib=1).vm
    seen = _busy_reboot(monkeypatch, failures=2)

    job = Job.objects.get(pk=services.vm_reboot(actor=alice, via="api", vm=vm).job.pk)

    assert job.status == JobStatus.SUCCEEDED and len(seen) == 3
    vm = VM.objects.get(pk=vm.pk)
    assert vm.status == VMStatus.RUNNING and vm.last_error == ""


def test_a_reboot_on_a_host_busy_for_too_long_tells_the_owner_plainly(test_host, alice, monkeypatch, sleeps):
    vm = services.vm_create(actor=alice, via="api", name="web-1", vcpus=1, memory_mib=128, disk_gib=1).vm
    _busy_reboot(monkeypatch, failures=99)

    job = Job.objects.get(pk=services.vm_reboot(actor=alice, via="api", vm=vm).job.pk)

    assert job.status == JobStatus.FAILED
    vm = VM.objects.get(pk=vm.pk)
    assert vm.status == VMStatus.RUNNING  # what libvirt says
    assert vm.last_error == "The host was busy with this VM; try again in a minute."
    assert "state change lock" not in vm.last_error + job.error


def test_a_create_whose_start_meets_a_busy_host_is_resumed_and_starts(test_host, alice, monkeypatch, sleeps):
    driver = get_driver("test:///default")
    real, seen = driver.start, []

    def start(uuid: str):
        seen.append(uuid)
        if len(seen) == 1:
            raise HypervisorBusy(detail=LOCK)
        return real(uuid)

    monkeypatch.setattr(driver, "start", start)
    result = services.vm_create(actor=alice, via="api", name="web-1", vcpus=1, memory_mib=128, disk_gib=1)

    job = Job.objects.get(pk=result.job.pk)
    assert job.status == JobStatus.SUCCEEDED and len(seen) == 2
    vm = VM.objects.get(pk=result.vm.pk)
    assert vm.status == VMStatus.RUNNING and vm.last_error == ""
