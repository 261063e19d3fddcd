"""Jobs from the command line.

    manage.py job [--user U] show ID
    manage.py job [--user U] cancel ID

`cancel` asks an external job's plugin to stop (the job ends when it acknowledges, or after
EXTERNAL_JOB_CANCEL_GRACE_SECONDS), or cancels a pending job of a kind that allows it at once; anything
else is refused with the reason (exit status 5). Without --user the command acts as the system.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.choices import Via
from portal.exceptions import NotFound, PortalError, admin_message, user_message
from portal.jobs.labels import job_label
from portal.jobs.selectors import job_find
from portal.jobs.services import job_cancel
from portal.models import Job


def _line(job: Job) -> str:
    cancel = " (cancel requested)" if job.cancel_requested_at and job.status == "running" else ""
    error = f": {job.error}" if job.error else ""
    return (f"{job.pk} {job_label(job.kind)} {job.target_name} — {job.status} {job.progress}% {job.step}"
            f"{cancel}{error} [by {job.started_by}]")


class Command(BaseCommand):
    help = "Show or cancel a job."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", help="Act as this user (default: the system).")
        verbs = parser.add_subparsers(dest="verb", required=True)
        for verb in ("show", "cancel"):
            verbs.add_parser(verb).add_argument("id")

    def handle(self, *args: Any, user: str | None = None, verb: str, id: str, **opts: Any) -> None:
        actor = None
        if user:
            actor = get_user_model().objects.filter(username=user).first()
            if actor is None:
                raise CommandError(f"No user {user!r}.", returncode=NotFound.exit_code)
        try:
            if verb == "cancel":
                job = job_cancel(actor=actor, via=Via.CLI, job_id=id)
            else:
                job = job_find(actor=actor, job_id=id)
        except PortalError as exc:
            text = admin_message(exc) if actor is None else user_message(exc, user=actor)
            raise CommandError(text, returncode=exc.exit_code) from None
        self.stdout.write(_line(job))
