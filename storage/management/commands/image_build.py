"""Build one of the images the portal can make itself (storage.recipes) and register it: an image.build job.

    manage.py image_build debian-12 [--host NAME] [--user ADMIN] [--wait]

Errors go to stderr with the exit status of their kind (README.md, "Command line"), like `manage.py vm`.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from cluster.models import Host
from portal.choices import JobStatus, Via
from portal.exceptions import NotFound, PortalError, admin_message, user_message
from portal.jobs import job_wait
from portal.models import Job
from storage import services
from storage.recipes import RECIPES

# With --wait, a job no worker has taken after this long is run by this command (run_job claims a job
# atomically, so it never runs twice), so the command also works while the portal is not running.
WORKER_GRACE_SECONDS = 5.0


class Command(BaseCommand):
    help = "Build an image from its recipe (debian-12: Debian 12 with cloud-init, 2-3 minutes) and register it."

    def add_arguments(self, parser):
        parser.add_argument("recipe", choices=sorted(RECIPES), help="What to build.")
        parser.add_argument("--host", help="Register the image on this host (default: the first enabled one).")
        parser.add_argument("--user", help="Act as this administrator (default: the system).")
        parser.add_argument("--wait", action="store_true", help="Follow the job to its end.")

    def handle(self, *args, recipe: str, host: str | None, user: str | None, wait: bool, **opts):
        actor = None
        if user:
            actor = get_user_model().objects.filter(username=user).first()
            if actor is None:
                raise CommandError(f"No user {user!r}.", returncode=NotFound.exit_code)
        target = None
        if host:
            target = Host.objects.filter(name=host).first()
            if target is None:
                raise CommandError(f"No host {host!r}.", returncode=NotFound.exit_code)
        try:
            job = services.image_build(actor=actor, via=Via.CLI, recipe=recipe, host=target)
        except PortalError as exc:
            # The system (no --user) is the operator at the server's shell: the administrators' words.
            text = admin_message(exc) if actor is None else user_message(exc, user=actor)
            raise CommandError(text, returncode=exc.exit_code) from None
        self.stdout.write(f"Building image {recipe}.")
        self.stdout.write(f"job {job.pk}")
        if wait:
            self._wait(job)

    def _wait(self, job: Job) -> None:
        job = job_wait(job, write=self.stdout.write, grace_seconds=WORKER_GRACE_SECONDS)
        if job.status != JobStatus.SUCCEEDED:
            raise CommandError(job.error or job.status, returncode=PortalError.exit_code)
