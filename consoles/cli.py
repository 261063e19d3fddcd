"""`manage.py vm --user U console NAME [--kind screen|terminal]`: one-time console URLs on the command line.

The verb lives here and is added to vms' `vm` command by ConsolesConfig.ready (vms never imports
consoles); it prints the same one-time links as Slack's `/vm console` and the REST API.
"""

from __future__ import annotations

from argparse import ArgumentParser

from django.conf import settings
from django.core.management.base import BaseCommand

from portal.choices import Via
from vms.models import VM

from .services import CONSOLE_LINK_KINDS, console_link_create

HELP = "Print one-time console URLs (like Slack's /vm console)."


def add_arguments(parser: ArgumentParser) -> None:
    """NAME and --kind (the service validates the kind, with the same words as every other door)."""
    parser.add_argument("name")
    parser.add_argument("--kind", help="screen or terminal (default: both)")


def run(command: BaseCommand, actor, vm: VM, options: dict) -> None:
    """Print one URL per kind: for `actor` only, each usable once, for a few minutes."""
    base = settings.PORTAL_BASE_URL.rstrip("/")
    kind = options.get("kind")
    link = None
    for each in [kind] if kind else CONSOLE_LINK_KINDS:
        link = console_link_create(actor=actor, via=Via.CLI, vm=vm, kind=each)
        command.stdout.write(f"{each:<9} {base}{link.path}")
    if link is not None:
        command.stdout.write(f"Each URL works once, for {actor.get_username()}, until "
                             f"{link.expires_at:%Y-%m-%d %H:%M:%S %Z}.")
