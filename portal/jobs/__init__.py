"""Jobs: long operations as Job rows, enqueued on commit, run by django.tasks workers.

A service creates the Job inside its record-phase transaction with `job_create`; after commit the
task `execute_job` runs the registered handler for the job's kind. Handlers report progress through
a JobContext; a heartbeat thread marks the job alive, and `jobs_reap_stale` finishes or retries jobs
whose worker died. A handler that meets a busy host (HypervisorBusy, a `transient` error) is run
again within the job, with exponential backoff (settings JOB_TRANSIENT_RETRIES,
JOB_TRANSIENT_DELAY_SECONDS).

A job is run by one worker at a time, and ends once: every write of a running job is fenced by its
attempt (status running, `attempts` as claimed). A worker whose job was taken away from it (reaped
after its heartbeat stopped, e.g. a database outage, and given to another worker) finds out at its next
heartbeat or progress report, stops the handler (JobLost) and writes nothing more: no result, no
clean-up, no second "finished". A worker killed outright leaves its job running without heartbeats;
the reaper retries it (another attempt) or fails it. A job still pending long after it was queued
(its task was lost with a worker that died before claiming it) is offered to a worker again.

Jobs run by external plugins (`external`, portal.jobs.services) are never queued: the plugin reports
through the API and finishes them itself. The reaper leaves them to `external_jobs_expire` (a plugin that
stopped reporting, or did not answer a cancel request in time). A pending job of a kind registered with
`on_cancel` may be cancelled before a worker claims it (portal.jobs.services.job_cancel).

`job.error` holds plain words for everyone (`portal.exceptions.user_message`); the hypervisor's own
text goes to `job.error_detail`, which only administrators see.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import F, QuerySet
from django.dispatch import Signal
from django.utils import timezone

from portal.choices import JobStatus
from portal.events import STAFF_GROUP, publish, user_group
from portal.exceptions import HypervisorError, PortalError, admin_detail, user_message
from portal.logcontext import log_context
from portal.models import Job

log = logging.getLogger(__name__)


HandlerFn = Callable[["JobContext"], dict | None]


class JobLost(Exception):
    """This worker no longer owns the job it runs (reaped and retried elsewhere, or failed): stop."""


@dataclass(frozen=True)
class Handler:
    run: Callable[[JobContext], dict | None]
    on_failure: Callable[[Job, str], None] | None = None
    # Set for kinds that may be cancelled while still pending: undoes the record phase (nothing ran yet).
    on_cancel: Callable[[Job], None] | None = None


HANDLERS: dict[str, Handler] = {}

# Sent once per job, after the commit that records its final state, with `job=` (a Job).
# Receivers (e.g. chatops notifications) run robustly: a failing receiver never breaks the job.
job_finished = Signal()


def _announce_finished(job: Job) -> None:
    for receiver, result in job_finished.send_robust(sender=Job, job=job):
        if isinstance(result, Exception):
            log.error("job_finished receiver %r failed for job %s", receiver, job.pk, exc_info=result)


# Checks run before any handler, with the job: one that raises a PortalError fails the job at once (its
# on_failure clean-up runs), e.g. vms refuses to act on a VM whose host does not answer instead of
# holding a worker while the call times out. Registered by the apps (AppConfig.ready).
_guards: dict[str, Callable[[Job], None]] = {}


def register_job_guard(name: str, guard: Callable[[Job], None]) -> None:
    """Run `guard(job)` before every job's handler (registering a name again replaces it)."""
    _guards[name] = guard


# Checks run inside the claim's transaction, before a pending job becomes running: one that returns a
# reason holds the job back (it stays pending, its step says why, starting with WAITING_PREFIX); whoever
# frees what it waits for offers it to a worker again (`enqueue`), and `jobs_reap_stale` does so anyway
# after JOB_HOST_WAIT_RECHECK_SECONDS. E.g. vms bounds the jobs that run on one host at once
# (Host.max_jobs), counting them under a row lock on the host so two workers never both take the last place.
WAITING_PREFIX = "Waiting: "
_claim_gates: dict[str, Callable[[Job], str | None]] = {}


def register_claim_gate(name: str, gate: Callable[[Job], str | None]) -> None:
    """Run `gate(job)` inside the claim's transaction; a reason (not None) holds the job back, pending."""
    _claim_gates[name] = gate


def job_handler(kind: str, *, on_failure: Callable[[Job, str], None] | None = None,
                on_cancel: Callable[[Job], None] | None = None) -> Callable[[HandlerFn], HandlerFn]:
    """Register the function that performs jobs of `kind` (the act phase). `on_cancel`: jobs of the kind
    may be cancelled while pending, and it undoes what their record phase wrote (run in the cancel's
    transaction, with the job already cancelled: no worker will run it)."""

    def register(fn: HandlerFn) -> HandlerFn:
        HANDLERS[kind] = Handler(fn, on_failure, on_cancel)
        return fn

    return register


def job_event(job: Job) -> dict[str, Any]:
    return {
        "kind": "job",
        "id": str(job.id),
        "job_kind": job.kind,
        "status": job.status,
        "progress": job.progress,
        "step": job.step,
        "error": job.error,
        "target_type": job.target_type,
        "target_id": job.target_id,
        "cancel_requested": job.cancel_requested_at is not None,
    }


# target type -> function(target id) giving the channel-layer groups that hear about its jobs live
# (vms: a VM's owner and team), so a job someone else started (an admin, a plugin) reaches them too.
_audiences: dict[str, Callable[[str], list[str]]] = {}


def register_job_audience(target_type: str, groups: Callable[[str], list[str]]) -> None:
    """Publish the jobs on targets of `target_type` to `groups(target_id)` as well."""
    _audiences[target_type] = groups


def publish_job(job: Job) -> None:
    groups = [STAFF_GROUP]
    if job.actor_id:
        groups.append(user_group(job.actor_id))
    audience = _audiences.get(job.target_type)
    if audience is not None and job.target_id:
        try:
            groups += [g for g in audience(job.target_id) if g not in groups]
        except Exception:  # a live update must never break the job it describes
            log.warning("job %s: could not find who hears of its target", job.pk, exc_info=True)
    publish(groups, job_event(job))


def job_create(*, kind: str, actor: Any, via: str, target: Any = None, params: dict | None = None,
               max_attempts: int = 2, parent: Job | None = None) -> Job:
    """Create a pending job and enqueue it once the surrounding transaction commits (`parent`: a batch's
    parent job, see job_create_parent)."""
    if kind not in HANDLERS:
        raise ValueError(f"no handler registered for job kind {kind!r}")
    job = Job.objects.create(
        kind=kind,
        actor=actor if getattr(actor, "pk", None) else None,
        via=via,
        target_type=target._meta.model_name if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_name=str(getattr(target, "name", "")) if target is not None else "",
        params=params or {},
        max_attempts=max_attempts,
        step="Queued",
        parent=parent,
    )
    publish_job(job)
    transaction.on_commit(lambda: enqueue(job.id))
    return job


def enqueue(job_id: uuid.UUID | str) -> None:
    """Hand the job to the task backend (after the commit that wrote it)."""
    from .tasks import execute_job  # tasks imports this module (run_job): a circular pair, resolved late

    execute_job.enqueue(str(job_id))


class JobContext:
    """What a handler gets: the job, progress reporting and a log."""

    def __init__(self, job: Job) -> None:
        self.job = job
        # How many times this handler has already been run again in this attempt after a busy host;
        # a handler may use it like `job.attempts` to adopt what an earlier run made.
        self.retry = 0

    @property
    def params(self) -> dict:
        return self.job.params

    def progress(self, percent: int, step: str) -> None:
        self.job.progress = max(0, min(100, percent))
        if step[:200] != self.job.step:  # the log has each step once, not once per percent
            self.job.log += f"{timezone.now():%H:%M:%S} {step}\n"
        self.job.step = step[:200]
        if not _owned(self.job).update(progress=self.job.progress, step=self.job.step, log=self.job.log,
                                       heartbeat_at=timezone.now(), updated_at=timezone.now()):
            raise JobLost(f"job {self.job.pk} attempt {self.job.attempts} is no longer this worker's")
        publish_job(self.job)

    def log(self, line: str) -> None:
        self.job.log += f"{timezone.now():%H:%M:%S} {line}\n"
        if not _owned(self.job).update(log=self.job.log):
            raise JobLost(f"job {self.job.pk} attempt {self.job.attempts} is no longer this worker's")


def _owned(job: Job) -> QuerySet[Job]:
    """The job's row while it is still running the attempt this worker claimed (else no row)."""
    return Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING, attempts=job.attempts)


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


class _Heartbeat(threading.Thread):
    def __init__(self, job: Job) -> None:
        super().__init__(name=f"job-heartbeat-{job.pk}", daemon=True)
        self.job = job
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.wait(settings.JOB_HEARTBEAT_SECONDS):
                try:
                    if not _owned(self.job).update(heartbeat_at=timezone.now()):
                        log.warning("job %s attempt %s was taken from this worker; the handler stops at its "
                                    "next progress report", self.job.pk, self.job.attempts)
                        return
                except Exception:  # a database hiccup: beat again next time (the reaper waits long enough)
                    log.warning("job %s heartbeat failed", self.job.pk, exc_info=True)
                    close_old_connections()
        finally:
            close_old_connections()


def _finish(job: Job, *, status: str, error: str = "", detail: str = "", tb: str = "",
            result: dict | None = None, reaped: bool = False) -> bool:
    """Record the job's end, once: only while it still runs this attempt (or, `reaped`, when the reaper
    has just marked it failed). False (and nothing written) when the job is no longer this worker's."""
    job.status = status
    job.error = error
    job.error_detail = detail
    job.traceback = tb
    job.result = result or {}
    job.finished_at = timezone.now()
    if status == JobStatus.SUCCEEDED:
        job.progress = 100
        job.step = "Done"
    elif status == JobStatus.CANCELLED:
        job.step = "Cancelled"
    else:
        job.step = "Failed" if status == JobStatus.FAILED else "Error"
    rows = Job.objects.filter(pk=job.pk, status=JobStatus.FAILED) if reaped else _owned(job)
    with transaction.atomic():
        if not rows.update(
                status=job.status, error=job.error, error_detail=job.error_detail, traceback=job.traceback,
                result=job.result, finished_at=job.finished_at, progress=job.progress, step=job.step,
                updated_at=timezone.now()):
            log.warning("job %s attempt %s ended as %s here, but the job is no longer this worker's: "
                        "outcome dropped", job.pk, job.attempts, status)
            return False
        publish_job(job)
        transaction.on_commit(lambda: _announce_finished(job))
    return True


def _claim(job_id: uuid.UUID | str) -> int:
    now = timezone.now()
    return Job.objects.filter(pk=job_id, status=JobStatus.PENDING).update(
        status=JobStatus.RUNNING, started_at=now, heartbeat_at=now, attempts=F("attempts") + 1,
        worker=_worker_name(), step="Started", updated_at=now)


def _hold(job: Job, why: str) -> None:
    """Leave the job pending, saying what it waits for (the log has each reason once)."""
    step = (WAITING_PREFIX + why)[:200]
    if step != job.step:
        job.log += f"{timezone.now():%H:%M:%S} {step}\n"
    job.step = step
    Job.objects.filter(pk=job.pk, status=JobStatus.PENDING).update(step=step, log=job.log, updated_at=timezone.now())
    transaction.on_commit(functools.partial(publish_job, job))


def _claim_gated(job_id: uuid.UUID | str) -> int:
    """The claim, after the gates agree, in one transaction (the gates' row locks last until it ends)."""
    with transaction.atomic():
        job = Job.objects.filter(pk=job_id, status=JobStatus.PENDING).first()
        if job is None:
            return 0
        for gate in list(_claim_gates.values()):
            why = gate(job)
            if why:
                _hold(job, why)
                log.info("job %s (%s) held back: %s", job.pk, job.kind, why)
                return 0
        return _claim(job_id)


def run_job(job_id: uuid.UUID | str) -> str | None:
    """Claim a pending job and run its handler; returns the final status (None if not claimed, or held
    back by a claim gate). Its log lines carry the job's id, its actor and its VM (portal.logcontext)."""
    about = Job.objects.filter(pk=job_id).values_list("target_type", "target_id", "actor__username").first()
    target_type, target_id, actor = about or ("", "", None)
    with log_context(job_id=job_id, user=actor, vm_id=target_id if target_type == "vm" else None):
        return _run_job(job_id)


def _run_job(job_id: uuid.UUID | str) -> str | None:
    claimed = _claim_gated(job_id) if _claim_gates else _claim(job_id)
    if not claimed:
        return None
    job = Job.objects.get(pk=job_id)
    publish_job(job)
    handler = HANDLERS.get(job.kind)
    heartbeat = _Heartbeat(job)
    heartbeat.start()
    try:
        if handler is None:
            raise RuntimeError(f"no handler for job kind {job.kind!r}")
        for guard in list(_guards.values()):
            guard(job)
        result = _run_retrying(handler, JobContext(job))
    except JobLost as exc:
        log.warning("%s: stopped without recording an outcome", exc)
        return None
    except PortalError as exc:
        error = user_message(exc)  # plain words: the owner reads this on every door
        log.info("job %s (%s) failed: %s %s", job.pk, job.kind, exc.message, exc.detail)
        recorded = _fail(job, handler, status=JobStatus.FAILED, error=error, detail=admin_detail(exc, shown=error))
    except Exception as exc:  # a bug: keep the traceback for admins
        log.exception("job %s (%s) errored", job.pk, job.kind)
        recorded = _fail(job, handler, status=JobStatus.ERRORED,
                         error=f"Internal error: {exc.__class__.__name__}", tb=traceback.format_exc())
    else:
        recorded = _finish(job, status=JobStatus.SUCCEEDED, result=result)
    finally:
        heartbeat.stop.set()
    return job.status if recorded else None  # None: taken over, this worker recorded nothing


_sleep = time.sleep  # the backoff wait (tests record it instead)


def _run_retrying(handler: Handler, ctx: JobContext) -> dict:
    """Run the (idempotent) handler; when the host is busy with the target, run it again after
    DELAY, 2*DELAY, ... seconds, up to JOB_TRANSIENT_RETRIES times, then let the error fail the job."""
    retries = max(0, settings.JOB_TRANSIENT_RETRIES)
    while True:
        try:
            return handler.run(ctx) or {}
        except HypervisorError as exc:
            if not exc.transient:  # e.g. HypervisorBusy is; anything else fails the job at once
                raise
            if ctx.retry >= retries:
                if retries:
                    ctx.log(f"The host was still busy after {retries} retries; giving up.")
                raise
            delay = settings.JOB_TRANSIENT_DELAY_SECONDS * 2 ** ctx.retry
            ctx.retry += 1
            log.warning("job %s (%s): host busy (%s); retry %s of %s in %.2f s", ctx.job.pk, ctx.job.kind,
                        exc.detail or exc.message, ctx.retry, retries, delay)
            ctx.progress(ctx.job.progress, f"The host is busy with this VM; retry {ctx.retry} of {retries} "
                                           f"in {delay:g} s")
            _sleep(delay)


def _fail(job: Job, handler: Handler | None, *, status: str, error: str, detail: str = "",
          tb: str = "", reaped: bool = False) -> bool:
    if not reaped and not _owned(job).exists():
        # Taken over: the clean-up would undo what the attempt now running does.
        log.warning("job %s attempt %s failed here after it was taken from this worker: no clean-up",
                    job.pk, job.attempts)
        return False
    if handler is not None and handler.on_failure is not None:
        try:
            handler.on_failure(job, error)
        except Exception:
            log.exception("on_failure of job %s failed", job.pk)
            tb = tb + "\n--- cleanup failed ---\n" + traceback.format_exc()
    return _finish(job, status=status, error=error, detail=detail, tb=tb, reaped=reaped)


def jobs_reap_stale() -> list[Job]:
    """Jobs whose worker stopped heart-beating: retried while attempts remain, else failed.

    Handlers are idempotent, so a retry resumes the work; the last failure runs the kind's clean-up.
    """
    cutoff = timezone.now() - timedelta(seconds=settings.JOB_STALE_SECONDS)
    reaped = []
    _offer_waiting_again()
    _offer_lost_again(cutoff)
    _settle_batches()
    for job in Job.objects.filter(status=JobStatus.RUNNING, heartbeat_at__lt=cutoff, external=False):
        if job.attempts < job.max_attempts:
            n = Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING, heartbeat_at__lt=cutoff).update(
                status=JobStatus.PENDING, step="Retrying after the worker stopped", updated_at=timezone.now())
            if n:
                job.refresh_from_db()
                log.warning("job %s lost its worker; retrying (attempt %s)", job.pk, job.attempts + 1)
                transaction.on_commit(functools.partial(enqueue, job.pk))
                reaped.append(job)
        else:
            n = Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING, heartbeat_at__lt=cutoff).update(
                status=JobStatus.FAILED, updated_at=timezone.now())
            if n:
                job.refresh_from_db()
                _fail(job, HANDLERS.get(job.kind), status=JobStatus.FAILED,
                      error="The worker running this job stopped; the job was abandoned after "
                            f"{job.attempts} attempt(s).", reaped=True)
                reaped.append(job)
    from .services import external_jobs_expire  # services imports this module: a circular pair, resolved late

    reaped += external_jobs_expire()
    return reaped


def _offer_waiting_again() -> None:
    """Jobs held back by a claim gate for a while are offered to a worker again (a wake-up may be lost)."""
    since = timezone.now() - timedelta(seconds=getattr(settings, "JOB_HOST_WAIT_RECHECK_SECONDS", 30))
    for pk in Job.objects.filter(status=JobStatus.PENDING, step__startswith=WAITING_PREFIX, external=False,
                                 updated_at__lt=since).values_list("pk", flat=True):
        Job.objects.filter(pk=pk, status=JobStatus.PENDING).update(updated_at=timezone.now())
        transaction.on_commit(functools.partial(enqueue, pk))


def _offer_lost_again(cutoff: datetime) -> None:
    """Jobs still pending (not waiting for a host) JOB_STALE_SECONDS after they were queued or last offered:
    their task may be lost (a worker killed between taking the task and claiming the job, or a process
    killed between the commit and the enqueue), so they are offered again. A second task for a job that
    does run is harmless: the claim is atomic and the other task finds nothing pending."""
    for pk in (Job.objects.filter(status=JobStatus.PENDING, updated_at__lt=cutoff, external=False)
               .exclude(step__startswith=WAITING_PREFIX).values_list("pk", flat=True)):
        if Job.objects.filter(pk=pk, status=JobStatus.PENDING, updated_at__lt=cutoff).update(
                updated_at=timezone.now()):
            log.warning("job %s still pending %s s after it was queued; offering it to a worker again", pk,
                        settings.JOB_STALE_SECONDS)
            transaction.on_commit(functools.partial(enqueue, pk))


# --- batches: a parent job and its children (issue #14) --------------------------------------------
# A parent job (e.g. vm.bulk_create) is no worker's: it is created running, with no heartbeat (so the reaper
# never takes it), and follows its children: its progress is the share of children finished, and it
# finishes when the last one does (succeeded when all did; failed with a summary otherwise, what succeeded
# kept). At most `params["parallelism"]` (default BULK_PARALLELISM) children of one parent run at once: a
# claim gate counts them under a row lock on the parent, and a finished child offers its waiting siblings
# to the workers again. The reaper settles a parent whose last child's announcement was lost (its process
# died between the commit and the signal) and re-offers waiting children, so a worker restart loses nothing.


# How a child held back by its batch's bound says so (its step is WAITING_PREFIX + this + ...): the batch wakes
# it, so other wake-ups (vms.host_jobs) leave it alone.
BATCH_WAIT_REASON = "this batch has "
BATCH_WAIT_STEP = WAITING_PREFIX + BATCH_WAIT_REASON


def job_create_parent(*, kind: str, actor: Any, via: str, params: dict | None = None, target: Any = None,
                      step: str = "Queued") -> Job:
    """Create a batch's parent job (running, no worker: its children's ends move it; see batch_settle)."""
    now = timezone.now()
    job = Job.objects.create(
        kind=kind, status=JobStatus.RUNNING, started_at=now, heartbeat_at=None,
        actor=actor if getattr(actor, "pk", None) else None, via=via,
        target_type=target._meta.model_name if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_name=str(getattr(target, "name", "")) if target is not None else "",
        params=params or {}, max_attempts=1, step=step[:200], worker="",
    )
    transaction.on_commit(functools.partial(publish_job, job))
    return job


def _batch_limit(parent: Job) -> int:
    limit = (parent.params or {}).get("parallelism")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        limit = settings.BULK_PARALLELISM
    return max(1, int(limit))


def batch_gate(job: Job) -> str | None:
    """Claim gate: a child waits while `parallelism` children of its parent run (parent row locked)."""
    if job.parent_id is None:
        return None
    parent = Job.objects.select_for_update().filter(pk=job.parent_id).first()
    if parent is None:
        return None
    limit = _batch_limit(parent)
    running = Job.objects.filter(parent_id=parent.pk, status=JobStatus.RUNNING).count()
    if running >= limit:
        return (f"{BATCH_WAIT_REASON}{running} jobs running (at most {limit} at once); this one starts when one "
                "of them finishes")
    return None


def _batch_summary(children: list[Job]) -> tuple[str, str]:
    """(step, error) of a parent from its children."""
    total = len(children)
    done = [c for c in children if c.status in JobStatus.FINISHED]
    failed = [c for c in done if c.status != JobStatus.SUCCEEDED]
    step = f"{len(done)} of {total} finished" + (f", {len(failed)} failed" if failed else "")
    error = ""
    if failed:
        shown = "; ".join(f"{c.target_name or c.pk}: {c.error or c.status}" for c in failed[:5])
        more = f"; and {len(failed) - 5} more" if len(failed) > 5 else ""
        error = (f"{len(failed)} of {total} failed ({total - len(failed)} succeeded and are kept): "
                 f"{shown}{more}")
    return step, error


def batch_settle(parent_id: uuid.UUID | str) -> Job | None:
    """Bring a parent job in line with its children: progress, step, and its end once all have finished."""
    with transaction.atomic():
        parent = Job.objects.select_for_update().filter(pk=parent_id, status=JobStatus.RUNNING).first()
        if parent is None:
            return None
        children = list(Job.objects.filter(parent_id=parent.pk).only("pk", "status", "error", "target_name",
                                                                     "target_id"))
        total = len(children)
        done = sum(1 for c in children if c.status in JobStatus.FINISHED)
        step, error = _batch_summary(children)
        if total and done < total:
            progress = done * 100 // total
            if (progress, step) != (parent.progress, parent.step):
                parent.log += f"{timezone.now():%H:%M:%S} {step}\n"
                parent.progress, parent.step = progress, step
                Job.objects.filter(pk=parent.pk).update(progress=progress, step=step, log=parent.log,
                                                        updated_at=timezone.now())
                transaction.on_commit(functools.partial(publish_job, parent))
            return parent
        ok = sum(1 for c in children if c.status == JobStatus.SUCCEEDED)
        result = {**(parent.result or {}), "children": total, "succeeded": ok, "failed": total - ok,
                  "failed_jobs": [str(c.pk) for c in children if c.status != JobStatus.SUCCEEDED][:100]}
        parent.log += f"{timezone.now():%H:%M:%S} {step}\n"
        Job.objects.filter(pk=parent.pk).update(log=parent.log)
        if total and ok == total:
            _finish(parent, status=JobStatus.SUCCEEDED, result=result)
        else:
            _finish(parent, status=JobStatus.FAILED, result=result,
                    error=error or (parent.result or {}).get("why_none") or "Nothing was created.")
            Job.objects.filter(pk=parent.pk).update(progress=100 if total else 0)
    return parent


def batch_child_finished(sender: Any = None, *, job: Job, **kwargs: Any) -> None:
    """job_finished receiver: the parent follows, and the waiting siblings are offered to the workers again."""
    if job.parent_id is None:
        return
    parent = batch_settle(job.parent_id)
    if parent is None:
        return
    free = _batch_limit(parent) - Job.objects.filter(parent_id=job.parent_id, status=JobStatus.RUNNING).count()
    waiting = list(Job.objects.filter(parent_id=job.parent_id, status=JobStatus.PENDING,
                                      step__startswith=WAITING_PREFIX).order_by("created_at")
                   .values_list("pk", flat=True)[:max(1, free)])
    for pk in waiting:
        enqueue(pk)


def _settle_batches() -> None:
    """Parents whose children all finished but which still run (a lost announcement) are finished now."""
    running_parents = Job.objects.filter(status=JobStatus.RUNNING, heartbeat_at__isnull=True,
                                         children__isnull=False).values_list("pk", flat=True).distinct()
    for pk in list(running_parents):
        if not Job.objects.filter(parent_id=pk, status__in=JobStatus.ACTIVE).exists():
            batch_settle(pk)


register_claim_gate("portal.batch_parallelism", batch_gate)
job_finished.connect(batch_child_finished, dispatch_uid="portal.jobs.batch_child_finished")


def job_wait(job: Job, *, write: Callable[[str], None], grace_seconds: float = 5.0, poll: float = 0.5) -> Job:
    """Follow a job to its end for a command-line door, writing each new "status progress% step" line.

    A job no worker has claimed after `grace_seconds` is run here, in this process (the demo on the test
    driver has no separate worker; a job that is claimed meanwhile is claimed once: run_job's atomic
    claim decides)."""
    last, started, runner = None, time.monotonic(), None

    def run_here() -> None:
        try:
            run_job(job.pk)
        finally:
            close_old_connections()

    while True:
        job.refresh_from_db()
        line = f"{job.status} {job.progress}% {job.step}"
        if line != last:
            write(line)
            last = line
        if not job.is_active:
            break
        if runner is None and job.status == JobStatus.PENDING and time.monotonic() - started > grace_seconds:
            write("No job worker took the job; running it here.")
            runner = threading.Thread(target=run_here, daemon=True)
            runner.start()
        time.sleep(poll)
    if runner is not None:
        runner.join()
        job.refresh_from_db()
    return job
