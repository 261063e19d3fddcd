"""Jobs per host are bounded by Host.max_jobs (issue #12), on PostgreSQL: a job whose host already runs
max_jobs jobs waits (pending, saying why) and runs when one of them finishes; a job on another host is
not held up; two workers claiming at once never both take the last place.

The jobs are of a kind registered here ("vm.test_hold"): a VM job whose handler waits until the test lets
it finish (no hypervisor call: the hosts are rows libvirt never reaches)."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import close_old_connections, connection

from cluster.choices import HostStatus
from cluster.models import Host
from portal import jobs
from portal.choices import JobStatus
from portal.models import Job
from vms.models import VM

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent claims need PostgreSQL"),
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]

KIND = "vm.test_hold"
_release: dict[str, threading.Event] = {}
_running: dict[int, int] = {}
_peak: dict[int, int] = {}
_lock = threading.Lock()


def _hold(ctx: jobs.JobContext) -> dict:
    host_id = VM.objects.filter(pk=int(ctx.job.target_id)).values_list("host_id", flat=True).get()
    with _lock:
        _running[host_id] = _running.get(host_id, 0) + 1
        _peak[host_id] = max(_peak.get(host_id, 0), _running[host_id])
    try:
        if not _release[ctx.params["key"]].wait(timeout=60):
            raise RuntimeError("never released")
    finally:
        with _lock:
            _running[host_id] -= 1
    return {}


@pytest.fixture
def hold_jobs(monkeypatch):
    monkeypatch.setitem(jobs.HANDLERS, KIND, jobs.Handler(_hold))
    _release.clear()
    _running.clear()
    _peak.clear()
    yield
    for event in _release.values():
        event.set()


def _host(name: str, max_jobs: int) -> Host:
    return Host.objects.create(name=name, uri=f"test:///nonexistent/{name}.xml", status=HostStatus.UP,
                               memory_mib=8192, cpus=8, max_jobs=max_jobs)


def _vm(owner, host: Host, name: str) -> VM:
    return VM.objects.create(name=name, owner=owner, host=host, vcpus=1, memory_mib=64, disk_gib=1,
                             status="running", domain_name=f"t-{name}")


def _job(vm: VM, key: str, monkeypatch) -> Job:
    """A pending job nobody has picked up yet (the test hands it to workers itself)."""
    _release[key] = threading.Event()
    monkeypatch.setattr(jobs, "enqueue", lambda job_id: None)
    try:
        return jobs.job_create(kind=KIND, actor=None, via="cli", target=vm, params={"key": key})
    finally:
        monkeypatch.undo()
        monkeypatch.setitem(jobs.HANDLERS, KIND, jobs.Handler(_hold))


def _worker(job: Job) -> threading.Thread:
    def run() -> None:
        try:
            jobs.run_job(job.pk)
        finally:
            close_old_connections()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _wait(predicate, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _status(job: Job) -> str:
    return Job.objects.values_list("status", flat=True).get(pk=job.pk)


def test_a_job_waits_for_its_busy_host_and_runs_when_the_running_one_finishes(alice, hold_jobs, monkeypatch):
    busy, other = _host("busy", max_jobs=1), _host("other", max_jobs=1)
    first = _job(_vm(alice, busy, "v1"), "first", monkeypatch)
    second = _job(_vm(alice, busy, "v2"), "second", monkeypatch)
    elsewhere = _job(_vm(alice, other, "v3"), "elsewhere", monkeypatch)

    worker = _worker(first)
    _wait(lambda: _status(first) == JobStatus.RUNNING, "the first job to run")

    assert jobs.run_job(second.pk) is None  # held back: the host runs max_jobs already
    second.refresh_from_db()
    assert second.status == JobStatus.PENDING and second.attempts == 0
    assert second.step.startswith("Waiting: host busy is running 1 job (at most 1 at once)"), second.step
    assert "Waiting: host busy" in second.log

    _release["elsewhere"].set()  # another host is not held up
    assert jobs.run_job(elsewhere.pk) == JobStatus.SUCCEEDED

    _release["second"].set()
    _release["first"].set()  # the first finishes; its end offers the waiting job to a worker again
    worker.join(timeout=30)
    _wait(lambda: _status(second) == JobStatus.SUCCEEDED, "the waiting job to run")
    first.refresh_from_db()
    second.refresh_from_db()
    assert second.started_at >= first.finished_at
    assert _peak[busy.pk] == 1


def test_two_workers_claiming_at_once_never_exceed_the_bound(alice, hold_jobs, monkeypatch):
    host = _host("narrow", max_jobs=2)
    batch = [_job(_vm(alice, host, f"w{i}"), f"k{i}", monkeypatch) for i in range(5)]
    threads = [_worker(job) for job in batch]  # five workers race for two places
    _wait(lambda: Job.objects.filter(pk__in=[j.pk for j in batch], status=JobStatus.RUNNING).count() == 2
          and Job.objects.filter(pk__in=[j.pk for j in batch], step__startswith="Waiting: ").count() == 3,
          "two running, three waiting")
    for t in threads:
        t.join(timeout=5)
    for event in _release.values():
        event.set()
    _wait(lambda: Job.objects.filter(pk__in=[j.pk for j in batch], status=JobStatus.SUCCEEDED).count() == 5,
          "every job to finish", timeout=60)
    assert _peak[host.pk] == 2


def test_waiting_jobs_are_offered_again_by_the_reaper(alice, hold_jobs, monkeypatch, settings):
    """A lost wake-up is not forever: the monitor's reaper offers held-back jobs again after a while."""
    settings.JOB_HOST_WAIT_RECHECK_SECONDS = 0
    host = _host("slow", max_jobs=1)
    first = _job(_vm(alice, host, "s1"), "s1", monkeypatch)
    second = _job(_vm(alice, host, "s2"), "s2", monkeypatch)
    worker = _worker(first)
    _wait(lambda: _status(first) == JobStatus.RUNNING, "the first job to run")
    assert jobs.run_job(second.pk) is None
    _release["s2"].set()
    # The first ends without waking anyone (as if its worker died after the commit).
    from portal.jobs import job_finished

    job_finished.disconnect(dispatch_uid="vms.host_jobs.wake_waiting")
    try:
        _release["s1"].set()
        worker.join(timeout=30)
        assert _status(second) == JobStatus.PENDING
        jobs.jobs_reap_stale()
        _wait(lambda: _status(second) == JobStatus.SUCCEEDED, "the reaper to offer the job again")
    finally:
        from vms.host_jobs import wake_waiting

        job_finished.connect(wake_waiting, dispatch_uid="vms.host_jobs.wake_waiting")
