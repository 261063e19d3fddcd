"""Every rule about backups: start one (full or incremental, push or pull), delete, restore to a new VM
or in place, schedules and retention. Doors (web, API, CLI, admin, Slack) call these.

STUB (issue #11): signatures fixed, implementation by the backups work.
"""

from __future__ import annotations

from portal.actors import Actor
from portal.models import Job
from vms.models import VM

from .models import Backup, BackupSchedule


def backup_create(*, actor: Actor, via: str, vm: VM | int, kind: str = "auto", mode: str = "push",
                  note: str = "") -> tuple[Backup, Job, str]:
    """Back a VM up (a job). kind: "full", "incremental" (since the VM's newest ready backup whose
    checkpoint libvirt still has) or "auto" (incremental when possible, else full). mode "pull": the
    disks are exported over NBD (Backup.nbd_uri) until backup_finish is called."""
    raise NotImplementedError


def backup_finish(*, actor: Actor, via: str, backup: Backup | int | str) -> tuple[Backup, Job | None, str]:
    """Pull mode: the external tool has read what it needs; end the export (the checkpoint stays)."""
    raise NotImplementedError


def backup_delete(*, actor: Actor, via: str, backup: Backup | int | str) -> tuple[Backup, Job | None, str]:
    """Delete a backup and its files (refused while an incremental depends on it, unless it is deleted too)."""
    raise NotImplementedError


def backup_restore(*, actor: Actor, via: str, backup: Backup | int | str, name: str | None = None,
                   in_place: bool = False) -> tuple[VM, Job, str]:
    """Restore the chain ending at `backup`: to a new VM called `name` (quota checked), or in place onto
    its stopped VM's disks. Refused when the chain is broken (a backup missing or failed)."""
    raise NotImplementedError


def backup_schedule_set(*, actor: Actor, via: str, vm: VM | int, enabled: bool = True, interval_hours: object = 24,
                        incrementals: object = 6, keep_chains: object = 2) -> BackupSchedule:
    """Create or change a VM's backup schedule."""
    raise NotImplementedError


def backup_schedule_remove(*, actor: Actor, via: str, vm: VM | int) -> None:
    """Stop backing a VM up on a schedule (its backups stay)."""
    raise NotImplementedError
