"""The job runner: outcomes, expected failure vs bug, and jobs whose worker died."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from portal import jobs
from portal.choices import JobStatus
from portal.exceptions import PortalError
from portal.hypervisor import get_driver
from portal.jobs import JobContext, job_create, jobs_reap_stale, run_job
from portal.models import Job
from vms import services
from vms.choices import VMStatus
from vms.models import VM

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def lost_enqueue(monkeypatch):
    """Within the block, enqueued jobs are dropped, as if the worker died before finishing them."""


    @contextlib.contextmanager
    def block():
        real = jobs.enqueue
        monkeypatch.setattr(jobs, "enqueue", lambda job_id: None)
        try:
            yield
        finally:
            monkeypatch.setattr(jobs, "enqueue", real)

    return block


def _stale_running(job: Job, attempts: int) -> None:
    Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, attempts=attempts,
                                         heartbeat_at=timezone.now() - timedelta(minutes=10))


def test_a_job_whose_worker_died_is_retried_and_finishes(test_host, alice, lost_enqueue):
    """Record phase done, worker killed mid-job: the reaper re-queues it and the idempotent handler finishes."""
    with lost_enqueue():  # the enqueue never reaches a worker
        result = services.vm_create(actor=alice, via="api", name="orphan-1", vcpus=1, memory_mib=128, disk_gib=1)
    _stale_running(result.job, attempts=1)
    reaped = jobs_reap_stale()
    assert [j.pk for j in reaped] == [result.job.pk]
    job = Job.objects.get(pk=result.job.pk)
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 2
    vm = VM.objects.get(pk=result.vm.pk)
    assert vm.status == VMStatus.RUNNING
    assert get_driver("test:///default").domain_exists(str(vm.uuid))


def test_a_job_out_of_attempts_fails_and_cleans_up(test_host, alice, lost_enqueue):
    with lost_enqueue():
        result = services.vm_create(actor=alice, via="api", name="orphan-2", vcpus=1, memory_mib=128, disk_gib=1)
    _stale_running(result.job, attempts=2)
    jobs_reap_stale()
    job = Job.objects.get(pk=result.job.pk)
    assert job.status == JobStatus.FAILED and "worker running this job stopped" in job.error
    vm = VM.objects.get(pk=result.vm.pk)
    assert vm.status == VMStatus.DELETED and vm.volumes.count() == 0


def test_fresh_running_jobs_are_left_alone(test_host, alice, lost_enqueue):
    with lost_enqueue():
        result = services.vm_create(actor=alice, via="api", name="busy-1", vcpus=1, memory_mib=128, disk_gib=1)
    Job.objects.filter(pk=result.job.pk).update(status=JobStatus.RUNNING, heartbeat_at=timezone.now())
    assert jobs_reap_stale() == []
    assert Job.objects.get(pk=result.job.pk).status == JobStatus.RUNNING


def test_a_job_runs_once_even_if_delivered_twice(test_host, alice):
    result = services.vm_create(actor=alice, via="api", name="once-1", vcpus=1, memory_mib=128, disk_gib=1)
    assert run_job(result.job.pk) is None  # already claimed and finished: not run again
    assert Job.objects.get(pk=result.job.pk).attempts == 1


def test_a_bug_in_a_handler_is_errored_with_traceback_not_failed(test_host, alice, monkeypatch):

    def boom(ctx):
        raise RuntimeError("kaboom")

    monkeypatch.setitem(jobs.HANDLERS, "vm.reboot", jobs.Handler(boom, jobs.HANDLERS["vm.reboot"].on_failure))
    vm = services.vm_create(actor=alice, via="api", name="bug-1", vcpus=1, memory_mib=128, disk_gib=1).vm
    result = services.vm_reboot(actor=alice, via="api", vm=vm)
    job = Job.objects.get(pk=result.job.pk)
    assert job.status == JobStatus.ERRORED
    assert job.error == "Internal error: RuntimeError" and "kaboom" in job.traceback
    vm.refresh_from_db()
    assert vm.status == VMStatus.RUNNING  # restored from what libvirt says


def test_job_pages_keep_the_status_filter_when_paging(client, alice):
    """The pager (one template for every list) keeps the other query parameters."""

    Job.objects.bulk_create([Job(kind="vm.start", actor=alice, status="failed", target_name=f"vm-{i}")
                             for i in range(55)])
    client.force_login(alice)
    html = client.get("/jobs/?status=failed").content.decode()
    assert "Page 1 of 2" in html and 'href="?status=failed&amp;page=2"' in html and "Older →" in html
    html = client.get("/jobs/?status=failed&page=2").content.decode()
    assert "Page 2 of 2" in html and 'href="?status=failed&amp;page=1"' in html and "← Newer" in html


def test_progress_logs_each_step_once_however_often_its_percent_moves(db, alice):

    job = job_create(kind="image.import", actor=alice, via="cli")  # any kind: only its progress is used
    Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, attempts=1)  # as claimed by a worker
    job.refresh_from_db()
    ctx = JobContext(job)
    for percent in range(10, 60):
        ctx.progress(percent, "Converting the image")
    ctx.progress(80, "Computing the checksum")
    ctx.progress(90, "Computing the checksum")
    job.refresh_from_db()
    lines = [line.split(" ", 1)[1] for line in job.log.splitlines()]
    assert lines == ["Converting the image", "Computing the checksum"]
    assert (job.progress, job.step) == (90, "Computing the checksum")


@pytest.fixture
def takeover_kind():
    """A job kind whose handler finds its job taken over by another worker (reaped, claimed again) mid-run,
    then reports progress or fails; records what ran."""


    seen: dict[str, list] = {"runs": [], "cleanups": [], "finished": []}

    def run(ctx):
        seen["runs"].append(ctx.job.attempts)
        Job.objects.filter(pk=ctx.job.pk).update(attempts=F("attempts") + 1, worker="another")
        if ctx.params.get("then") == "fail":
            raise PortalError("the host said no")
        ctx.progress(50, "Half way")
        return {"done": True}

    def finished(sender, job, **kwargs):
        seen["finished"].append(job.pk)

    jobs.HANDLERS["test.takeover"] = jobs.Handler(run, lambda job, error: seen["cleanups"].append(error))
    jobs.job_finished.connect(finished)
    yield seen
    jobs.job_finished.disconnect(finished)
    del jobs.HANDLERS["test.takeover"]


@pytest.mark.parametrize("then", ["progress", "fail"])
def test_a_worker_whose_job_was_taken_over_writes_nothing_more(alice, lost_enqueue, takeover_kind, then):
    """Reaped while still alive (its heartbeat stalled) and run by another worker: the first worker stops
    at its next report, and neither its progress, its outcome nor its clean-up reaches the job."""

    with lost_enqueue():
        job = job_create(kind="test.takeover", actor=alice, via="cli", params={"then": then})
    assert run_job(job.pk) is None
    job.refresh_from_db()
    assert takeover_kind["runs"] == [1]
    assert (job.status, job.attempts, job.worker, job.finished_at) == (JobStatus.RUNNING, 2, "another", None)
    assert job.step == "Started" and "Half way" not in job.log and job.result == {}
    assert takeover_kind["cleanups"] == [] and takeover_kind["finished"] == []


def test_a_job_left_pending_by_a_lost_task_is_offered_again(test_host, alice, lost_enqueue, settings):
    """The task was lost (its worker died before claiming the job): the reaper offers the job again once it
    has waited JOB_STALE_SECONDS, and it runs once; a job queued recently is left to its task."""
    with lost_enqueue():
        old = services.vm_create(actor=alice, via="api", name="lost-task", vcpus=1, memory_mib=128, disk_gib=1)
        new = services.vm_create(actor=alice, via="api", name="queued", vcpus=1, memory_mib=128, disk_gib=1)
    Job.objects.filter(pk=old.job.pk).update(updated_at=timezone.now() - timedelta(seconds=settings.JOB_STALE_SECONDS + 5))
    jobs_reap_stale()
    old_job, new_job = Job.objects.get(pk=old.job.pk), Job.objects.get(pk=new.job.pk)
    assert (old_job.status, old_job.attempts) == (JobStatus.SUCCEEDED, 1)
    assert (new_job.status, new_job.attempts) == (JobStatus.PENDING, 0)
    services.vm_delete(actor=alice, via="api", vm=VM.objects.get(pk=old.vm.pk))
