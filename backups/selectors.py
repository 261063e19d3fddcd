"""Reads about backups that depend on who asks.

STUB (issue #11): signatures fixed, implementation by the backups work.
"""

from __future__ import annotations

from django.db.models import QuerySet

from portal.actors import Actor
from vms.models import VM

from .models import Backup


def backups_visible(actor: Actor) -> QuerySet[Backup]:
    """Backups the actor may see: of VMs they may see, and their own (also of deleted VMs); all for admins."""
    raise NotImplementedError


def backup_get(*, actor: Actor, key: Backup | int | str) -> Backup:
    """One visible backup by id or UUID (NotFound otherwise)."""
    raise NotImplementedError


def vm_backups(*, actor: Actor, vm: VM) -> list[Backup]:
    """The VM's backups, newest first."""
    raise NotImplementedError


def backup_chain(backup: Backup) -> list[Backup]:
    """The chain a restore of `backup` reads: its full backup first, then each incremental up to it."""
    raise NotImplementedError
