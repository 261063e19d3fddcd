"""The shared shape of the `manage.py <noun> [--user NAME] <verb> ...` commands (hosts, clusters, pools,
networks, VM pools, clouds, Glance, Neutron, plugin tokens): who acts, which `_<verb>` method runs, and
how a refusal becomes one sentence and an exit status (README, "Command line").

A command names its actor with `--user` (required by commands that users run, optional where an
administrator may act as the system from the server); subclasses define `_<verb>(actor, opts)` or
override `run_verb` to look something up first."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from portal.exceptions import NotFound, PortalError, admin_message, user_message


def command_actor(user: str | None) -> Any:
    """The account named by --user; none named: None (the system)."""
    if not user:
        return None
    actor = get_user_model().objects.filter(username=user).first()
    if actor is None:
        raise CommandError(f"No user {user!r}.", returncode=NotFound.exit_code)
    return actor


class VerbCommand(BaseCommand):
    """Runs `_<verb>(actor, opts)`; a PortalError is the command's error: the administrator's text for the
    system, the user's own sentence for a user, and the error's exit status."""

    def run_verb(self, actor: Any, verb: str, opts: dict[str, Any]) -> None:
        getattr(self, f"_{verb}")(actor, opts)

    def handle(self, *args: Any, user: str | None = None, verb: str, **opts: Any) -> None:
        actor = command_actor(user)
        try:
            self.run_verb(actor, verb, opts)
        except PortalError as exc:
            text = admin_message(exc) if actor is None else user_message(exc, user=actor)
            raise CommandError(text, returncode=exc.exit_code) from None
