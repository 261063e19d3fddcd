"""External-plugin jobs (oVirt's "external tasks") and cancelling jobs.

A plugin (portal.plugins: a token, a scope) creates a job on a VM or host it may reach; the job is
`running` at once and never queued: the plugin reports progress, steps and log lines, then finishes it as
succeeded, failed or cancelled. Only the plugin that created a job may write to it (any other sees 404),
and a finished job takes no more writes (409). The job is otherwise an ordinary Job row: the same pages,
API, live updates (publish_job), audit rows and `job_finished` signal (Slack) as the portal's own.

Cancelling (`job_cancel`), by whoever may see the job (its starter, the target's owner and group, staff):
- an external job created `cancellable` gets `cancel_requested_at`; the plugin sees `cancel_requested`
  in every answer and acknowledges by finishing the job as cancelled (after its own clean-up). A plugin
  that has not within EXTERNAL_JOB_CANCEL_GRACE_SECONDS finds it cancelled by the portal
  (`external_jobs_expire`, on the monitor's reaper turn); its later writes get 409.
- a pending portal job whose kind registered `on_cancel` (portal.jobs.job_handler) is cancelled at once,
  before any worker claims it: the claim and the cancel are the same atomic `pending ->` update, so exactly
  one wins; `on_cancel` undoes the record phase.
- anything else: InvalidState (409) saying why.
An external job that has not reported for EXTERNAL_JOB_TIMEOUT_SECONDS fails ("the plugin stopped reporting").
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from portal.actors import Actor
from portal.audit import audit
from portal.choices import JobStatus, Via
from portal.exceptions import InvalidState, NotFound, ValidationFailed
from portal.models import AuditEvent, Job, PluginToken
from portal.plugins import plugin_actor_name, plugin_target_get

from . import HANDLERS, _announce_finished, _finish, publish_job
from .labels import job_label
from .selectors import job_find

KIND_RE = re.compile(r"external\.[a-z0-9][a-z0-9_.-]{0,54}")
MAX_STEP = 200
MAX_DESCRIPTION = 500
MAX_ERROR = 2000
MAX_LOG_LINE = 500
MAX_LOG_LINES = 100  # per report
MAX_LOG_CHARS = 64 * 1024  # the job's whole log keeps its newest lines within this
MAX_RESULT_BYTES = 16 * 1024
# C0 and C1 control characters (tabs included) and the Unicode line/paragraph separators and bidi overrides
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def clean_text(value: Any, *, field: str, limit: int, required: bool = False) -> str:
    """One line of plain text: control characters removed, trimmed; longer than `limit`: refused."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValidationFailed(f"{field}: text expected.", field=field)
    text = _CONTROL.sub(" ", value).strip()
    text = re.sub(r" {2,}", " ", text)
    if required and not text:
        raise ValidationFailed(f"{field}: required.", field=field)
    if len(text) > limit:
        raise ValidationFailed(f"{field}: at most {limit} characters (got {len(text)}).", field=field)
    return text


def _log_lines(lines: Any) -> list[str]:
    if lines is None:
        return []
    if isinstance(lines, str):
        lines = lines.splitlines()
    if not isinstance(lines, list):
        raise ValidationFailed("log: a line of text or a list of lines.", field="log")
    if len(lines) > MAX_LOG_LINES:
        raise ValidationFailed(f"log: at most {MAX_LOG_LINES} lines per report (got {len(lines)}).", field="log")
    return [line for line in (clean_text(x, field="log", limit=MAX_LOG_LINE) for x in lines) if line]


def _append_log(job: Job, lines: list[str]) -> None:
    if not lines:
        return
    stamp = f"{timezone.now():%H:%M:%S}"
    log = job.log + "".join(f"{stamp} {line}\n" for line in lines)
    if len(log) > MAX_LOG_CHARS:  # keep the newest lines, whole
        cut = log.find("\n", len(log) - MAX_LOG_CHARS + 40)
        log = "… (older lines dropped)\n" + log[cut + 1:]
    job.log = log


def _progress(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ValidationFailed("progress: a whole number from 0 to 100.", field="progress")
    if not 0 <= int(value) <= 100:
        raise ValidationFailed(f"progress: from 0 to 100 (got {int(value)}).", field="progress")
    return int(value)


def _plugin_job(*, plugin: PluginToken, job_id: object, lock: bool = False) -> Job:
    """A job this plugin created; any other job (another plugin's, a portal job) is NotFound alike."""
    try:
        pk = uuid.UUID(str(job_id))
    except ValueError:
        raise NotFound(f"Job {str(job_id)[:40]} not found.") from None
    qs = Job.objects.filter(external=True, plugin=plugin)
    if lock:
        qs = qs.select_for_update()
    job = qs.filter(pk=pk).first()
    if job is None:
        raise NotFound(f"Job {str(job_id)[:40]} not found.")
    return job


def _require_running(job: Job) -> None:
    if job.status != JobStatus.RUNNING:
        raise InvalidState(f"This job has ended ({job.get_status_display().lower()}); it takes no more updates.",
                           status=job.status)


def external_job_get(*, plugin: PluginToken, job_id: object) -> Job:
    """One of the plugin's own jobs (with `cancel_requested`)."""
    return _plugin_job(plugin=plugin, job_id=job_id)


def external_job_list(*, plugin: PluginToken) -> Any:
    """The plugin's own jobs, newest first."""
    return Job.objects.filter(external=True, plugin=plugin).order_by("-created_at")


def external_job_create(*, plugin: PluginToken, kind: str, target_type: str, target: str,
                        description: str = "", step: str = "", cancellable: bool = False) -> Job:
    """A running job on a VM or host the plugin's scope reaches, recorded with its audit row."""
    kind = (kind or "").strip() if isinstance(kind, str) else ""
    if not KIND_RE.fullmatch(kind):
        raise ValidationFailed("kind: 'external.' and a name of lower-case letters, digits, '.', '-' or '_' "
                               "(e.g. external.backup-agent).", field="kind")
    description = clean_text(description, field="description", limit=MAX_DESCRIPTION)
    step = clean_text(step, field="step", limit=MAX_STEP) or "Started"
    if not isinstance(target, str | int) or isinstance(target, bool) or not str(target).strip():
        raise ValidationFailed("target: the id or name of the VM or host.", field="target")
    obj = plugin_target_get(plugin=plugin, target_type=str(target_type or ""), key=str(target))
    now = timezone.now()
    with transaction.atomic():
        job = Job.objects.create(
            kind=kind, status=JobStatus.RUNNING, via=Via.PLUGIN, external=True, plugin=plugin,
            cancellable=bool(cancellable), target_type=str(obj._meta.model_name), target_id=str(obj.pk),
            target_name=str(getattr(obj, "name", obj)), params={"description": description} if description else {},
            step=step, progress=0, attempts=1, max_attempts=1, worker=plugin_actor_name(plugin),
            started_at=now, heartbeat_at=now, log=f"{now:%H:%M:%S} {step}\n")
        audit(actor=plugin_actor_name(plugin), via=Via.PLUGIN, action=kind, target=obj, job=job,
              outcome=AuditEvent.Outcome.REQUESTED, message=description or job_label(kind),
              data={"plugin": plugin.name})
        publish_job(job)
    return job


def external_job_report(*, plugin: PluginToken, job_id: object, progress: Any = None, step: Any = None,
                        log: Any = None) -> Job:
    """Progress (0-100), the current step and log lines from the plugin; 409 once the job has ended."""
    percent = _progress(progress)
    new_step = clean_text(step, field="step", limit=MAX_STEP) if step is not None else None
    lines = _log_lines(log)
    with transaction.atomic():
        job = _plugin_job(plugin=plugin, job_id=job_id, lock=True)
        _require_running(job)
        if new_step and new_step != job.step:
            lines = [new_step, *lines]  # the log has each step once
            job.step = new_step
        if percent is not None:
            job.progress = percent
        _append_log(job, lines)
        job.heartbeat_at = timezone.now()
        job.save(update_fields=["progress", "step", "log", "heartbeat_at", "updated_at"])
        publish_job(job)
    return job


_ENDINGS = {"succeeded": JobStatus.SUCCEEDED, "failed": JobStatus.FAILED, "cancelled": JobStatus.CANCELLED}


def external_job_finish(*, plugin: PluginToken, job_id: object, status: Any = "succeeded", error: Any = "",
                        result: Any = None, log: Any = None) -> Job:
    """The plugin ends its job: succeeded (progress 100), failed (with an error message) or cancelled."""
    if status not in _ENDINGS:
        raise ValidationFailed("status: succeeded, failed or cancelled.", field="status")
    ending = _ENDINGS[status]
    message = clean_text(error, field="error", limit=MAX_ERROR)
    if ending == JobStatus.FAILED and not message:
        raise ValidationFailed("error: say why the job failed.", field="error")
    if ending != JobStatus.FAILED and message and ending != JobStatus.CANCELLED:
        raise ValidationFailed("error: only a failed or cancelled job has one.", field="error")
    if result is None:
        result = {}
    if not isinstance(result, dict):
        raise ValidationFailed("result: a JSON object.", field="result")
    if len(json.dumps(result)) > MAX_RESULT_BYTES:
        raise ValidationFailed(f"result: at most {MAX_RESULT_BYTES} bytes of JSON.", field="result")
    lines = _log_lines(log)
    with transaction.atomic():
        job = _plugin_job(plugin=plugin, job_id=job_id, lock=True)
        _require_running(job)
        _append_log(job, lines)
        Job.objects.filter(pk=job.pk).update(log=job.log)
        _end(job, status=ending, error=message, result=result, by=plugin_actor_name(plugin))
    return job


def _target_of(job: Job) -> dict[str, Any]:
    """The job's target as audit() takes it (the job names it; the object may be gone)."""
    return {"target_type": job.target_type, "target_id": job.target_id, "target_name": job.target_name}


def _end(job: Job, *, status: str, error: str = "", result: dict | None = None, by: str) -> None:
    """Record the external job's end (once: `_finish` writes only while it still runs) and audit it."""
    if status == JobStatus.CANCELLED and not error:
        error = "Cancelled."
    if not _finish(job, status=status, error=error if status != JobStatus.SUCCEEDED else "", result=result):
        raise InvalidState("This job has already ended; it takes no more updates.", status=JobStatus.FINISHED[0])
    target = _target_of(job)
    if status == JobStatus.CANCELLED:
        audit(actor=by, via=Via.PLUGIN if by.startswith("plugin:") else Via.SYSTEM, action="job.cancelled",
              job=job, message=f"{job_label(job.kind)} cancelled", **target)
    else:
        audit(actor=by, via=Via.PLUGIN if by.startswith("plugin:") else Via.SYSTEM, action=job.kind, job=job,
              outcome=AuditEvent.Outcome.SUCCEEDED if status == JobStatus.SUCCEEDED else AuditEvent.Outcome.FAILED,
              message=error or f"{job_label(job.kind)} finished", **target)


def job_can_cancel(job: Job) -> bool:
    """Whether a cancel would be taken now (what the web page's button and the API say)."""
    if job.external:
        return job.cancellable and job.status == JobStatus.RUNNING and job.cancel_requested_at is None
    handler = HANDLERS.get(job.kind)
    return job.status == JobStatus.PENDING and handler is not None and handler.on_cancel is not None


def job_cancel(*, actor: Actor, via: str, job_id: object) -> Job:
    """Cancel a job the actor may see: ask an external job's plugin to stop, or cancel a pending portal job
    of a cancellable kind at once; anything else is refused with the reason (409). Actor None: the system."""
    job = job_find(actor=actor, job_id=job_id)
    label = job_label(job.kind)
    target = _target_of(job)
    if job.status in JobStatus.FINISHED:
        raise InvalidState(f"{label} has already ended ({job.get_status_display().lower()}).", status=job.status)
    if job.external:
        if not job.cancellable:
            raise InvalidState(f"{label} was started by a plugin that cannot cancel it.", status=job.status)
        with transaction.atomic():
            rows = Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING, cancel_requested_at__isnull=True).update(
                cancel_requested_at=timezone.now(), updated_at=timezone.now())
            job.refresh_from_db()
            if rows:
                job.log += f"{timezone.now():%H:%M:%S} Cancel requested by {_name(actor)}\n"
                Job.objects.filter(pk=job.pk).update(log=job.log)
                audit(actor=actor, via=via, action="job.cancel", job=job, outcome=AuditEvent.Outcome.REQUESTED,
                      message=f"Cancel {label}: the plugin was asked to stop", **target)
                publish_job(job)
            elif job.status in JobStatus.FINISHED:
                raise InvalidState(f"{label} has already ended ({job.get_status_display().lower()}).",
                                   status=job.status)
        return job
    handler = HANDLERS.get(job.kind)
    if handler is None or handler.on_cancel is None:
        raise InvalidState(f"{label} cannot be cancelled: jobs of this kind are not safe to stop once queued.",
                           status=job.status)
    if job.status != JobStatus.PENDING:
        raise InvalidState(f"{label} has started; it can only be cancelled before it starts.", status=job.status)
    with transaction.atomic():
        now = timezone.now()
        rows = Job.objects.filter(pk=job.pk, status=JobStatus.PENDING).update(
            status=JobStatus.CANCELLED, step="Cancelled", error="Cancelled before it started.", finished_at=now,
            updated_at=now)
        if not rows:
            raise InvalidState(f"{label} has started; it can only be cancelled before it starts.",
                               status=JobStatus.RUNNING)
        job.refresh_from_db()
        handler.on_cancel(job)
        audit(actor=actor, via=via, action="job.cancel", job=job, message=f"{label} cancelled before it started",
              **target)
        publish_job(job)
        done = job
        transaction.on_commit(lambda: _announce_finished(done))
    return job


def _name(actor: Actor) -> str:
    return actor.get_username() if actor is not None and getattr(actor, "pk", None) else "the system"


def external_jobs_expire() -> list[Job]:
    """External jobs whose cancel went unanswered for the grace period (cancelled), or whose plugin stopped
    reporting for EXTERNAL_JOB_TIMEOUT_SECONDS (failed). Run with the reaper."""
    now = timezone.now()
    ended = []
    grace = timedelta(seconds=settings.EXTERNAL_JOB_CANCEL_GRACE_SECONDS)
    for job in Job.objects.filter(external=True, status=JobStatus.RUNNING, cancel_requested_at__lt=now - grace):
        try:
            _end(job, status=JobStatus.CANCELLED, by="system",
                 error="Cancelled: the plugin did not stop the job in time.")
        except InvalidState:
            continue
        ended.append(job)
    silent = timedelta(seconds=settings.EXTERNAL_JOB_TIMEOUT_SECONDS)
    for job in Job.objects.filter(external=True, status=JobStatus.RUNNING, heartbeat_at__lt=now - silent):
        try:
            _end(job, status=JobStatus.FAILED, by="system",
                 error=f"The plugin stopped reporting on this job for {settings.EXTERNAL_JOB_TIMEOUT_SECONDS} s.")
        except InvalidState:
            continue
        ended.append(job)
    return ended
