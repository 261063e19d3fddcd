"""The image library from the command line, through the same services as the web, API and admin.

    manage.py image [--user U] import SOURCE --name N [--title T] [--format F] [--owner U] [--visibility V]
                                              [--sha256 H] [--wait]
    manage.py image [--user U] list
    manage.py image [--user U] delete NAME

Without --user the command acts as the system (an administrator at the server's shell). `manage.py vm
--user U image …` is the same. Errors go to stderr with the exit status of their kind (README.md,
"Command line").
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from portal.exceptions import NotFound, PortalError, admin_message, user_message
from storage.cli import add_image_verbs, run_image_verb

from .image_build import Command as BuildCommand


class Command(BaseCommand):
    help = "Images: import from a URL or a server file (a job), list, delete."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--user", help="Act as this portal user (default: the system).")
        add_image_verbs(parser)

    def handle(self, *args: Any, user: str | None = None, **opts: Any) -> None:
        actor = None
        if user:
            actor = get_user_model().objects.filter(username=user).first()
            if actor is None:
                raise CommandError(f"No user {user!r}.", returncode=NotFound.exit_code)
        try:
            outcome = run_image_verb(actor, opts, self.stdout.write)
        except PortalError as exc:
            text = admin_message(exc) if actor is None else user_message(exc, user=actor)
            raise CommandError(text, returncode=exc.exit_code) from None
        if outcome is None:
            return
        self.stdout.write(outcome.message)
        if outcome.job is not None:
            self.stdout.write(f"job {outcome.job.pk}")
            if opts.get("wait"):
                BuildCommand(stdout=self.stdout, stderr=self.stderr)._wait(outcome.job)
