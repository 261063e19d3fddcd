"""`manage.py vm --user U ...` verbs for backups, through the same services as the web, API and Slack:

  backup NAME [--full|--incremental] [--pull] [--note TEXT]     back a VM up (a job; --wait follows it)
  backups [NAME]                                               your backups (or one VM's), newest first
  restore BACKUP_ID --name NEW | --in-place                    restore to a new VM, or onto the stopped VM
  delete-backup BACKUP_ID                                      delete a backup and its files
  finish-backup BACKUP_ID                                      pull mode: end the NBD export
  backup-schedule NAME [--every H --incrementals N --keep N | --off]   show, set or stop the schedule

The verbs are added to vms' `vm` command by `register()` (called from BackupsConfig.ready): vms never
imports backups.
"""

from __future__ import annotations

from argparse import ArgumentParser
from dataclasses import dataclass
from typing import Any

from django.core.management.base import BaseCommand

from portal.choices import Via
from portal.exceptions import ValidationFailed
from portal.models import Job
from portal.units import filesize
from vms.models import VM
from vms.selectors import vm_get_by_name

from . import selectors, services
from .models import Backup, BackupSchedule


@dataclass(frozen=True)
class Outcome:
    """What a verb printed and the job it queued (the `vm` command prints both, and follows --wait)."""

    message: str
    job: Job | None


def backup_line(backup: Backup) -> str:
    """One backup on one line: id, VM, kind, status (with progress while it runs), size, parent, when."""
    state = f"{backup.status} {backup.progress}%" if backup.status == Backup.Status.RUNNING else backup.status
    parent = f"on #{backup.parent_id}" if backup.parent_id else "-"
    gone = "" if backup.vm_id else " (VM deleted)"
    return (f"{backup.pk:>5}  {backup.vm_name + gone:<28} {backup.kind:<11} {backup.mode:<4} {state:<14} "
            f"{filesize(backup.size_bytes):>10}  {parent:<8} {backup.created_at:%Y-%m-%d %H:%M}")


def schedule_text(schedule: BackupSchedule) -> str:
    state = "on" if schedule.enabled else "paused"
    when = f"{schedule.next_run_at:%Y-%m-%d %H:%M}" if schedule.next_run_at else "-"
    return (f"Backups of {schedule.vm.name}: {state}, every {schedule.interval_hours} h, a full backup then "
            f"{schedule.incrementals} incremental ones, keeping {schedule.keep_chains} chains; next run {when}.")


# --- backup NAME ----------------------------------------------------------------------------------

BACKUP_HELP = "Back a VM up (auto: incremental when possible, else full)."


def backup_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("name")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--full", dest="kind", action="store_const", const="full", help="A full backup.")
    kind.add_argument("--incremental", dest="kind", action="store_const", const="incremental",
                      help="Only what changed since the VM's newest backup.")
    parser.add_argument("--pull", action="store_true",
                        help="Pull mode: export the disks over NBD for an external tool (end with finish-backup).")
    parser.add_argument("--note", default="", help="Free text kept with the backup.")


def backup_run(command: BaseCommand, actor: Any, vm: VM, options: dict) -> Outcome:
    backup, job, message = services.backup_create(
        actor=actor, via=Via.CLI, vm=vm, kind=options.get("kind") or "auto",
        mode="pull" if options.get("pull") else "push", note=options.get("note") or "")
    return Outcome(f"{message} (backup {backup.pk})", job)


# --- backups [NAME] -------------------------------------------------------------------------------

BACKUPS_HELP = "List your backups (also of deleted VMs), or one VM's."


def backups_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="A VM's name: only its backups.")


def backups_run(command: BaseCommand, actor: Any, vm: None, options: dict) -> None:
    if options.get("name"):
        found = vm_get_by_name(user=actor, name=options["name"])
        backups = list(selectors.vm_backups(actor=actor, vm=found))
    else:
        backups = list(selectors.backups_visible(actor))
    if not backups:
        command.stdout.write("No backups.")
        return
    command.stdout.write(f"{'id':>5}  {'vm':<28} {'kind':<11} {'mode':<4} {'status':<14} {'size':>10}  "
                         f"{'parent':<8} created")
    for backup in backups:
        command.stdout.write(backup_line(backup))


# --- restore / delete-backup / finish-backup BACKUP_ID ----------------------------------------------

RESTORE_HELP = "Restore a backup (its chain) to a new VM, or in place onto its stopped VM."


def restore_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("backup", metavar="BACKUP_ID", help="The backup's id or UUID.")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--name", dest="new_name", metavar="NEW", help="The new VM's name.")
    where.add_argument("--in-place", action="store_true", help="Onto the backed-up VM's disks (it must be stopped).")


def restore_run(command: BaseCommand, actor: Any, vm: None, options: dict) -> Outcome:
    restored, job, message = services.backup_restore(
        actor=actor, via=Via.CLI, backup=options["backup"], name=options.get("new_name"),
        in_place=bool(options.get("in_place")))
    return Outcome(message, job)


def backup_id_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("backup", metavar="BACKUP_ID", help="The backup's id or UUID.")


DELETE_HELP = "Delete a backup and its files."


def delete_run(command: BaseCommand, actor: Any, vm: None, options: dict) -> Outcome:
    _backup, job, message = services.backup_delete(actor=actor, via=Via.CLI, backup=options["backup"])
    return Outcome(message, job)


FINISH_HELP = "Pull mode: the external tool is done; end the NBD export."


def finish_run(command: BaseCommand, actor: Any, vm: None, options: dict) -> Outcome:
    _backup, job, message = services.backup_finish(actor=actor, via=Via.CLI, backup=options["backup"])
    return Outcome(message, job)


# --- backup-schedule NAME -------------------------------------------------------------------------

SCHEDULE_HELP = "Show, set or stop a VM's backup schedule."


def schedule_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("name")
    parser.add_argument("--every", dest="interval_hours", metavar="HOURS", help="Hours between two backups.")
    parser.add_argument("--incrementals", metavar="N", help="Incremental backups between two full ones.")
    parser.add_argument("--keep", dest="keep_chains", metavar="N", help="Chains (a full backup and its "
                                                                         "incrementals) kept.")
    parser.add_argument("--off", action="store_true", help="Stop the schedule (the backups stay).")


def schedule_run(command: BaseCommand, actor: Any, vm: VM, options: dict) -> Outcome:
    given = {k: options[k] for k in ("interval_hours", "incrementals", "keep_chains") if options.get(k) is not None}
    if options.get("off"):
        if given:
            raise ValidationFailed("--off stops the schedule: give it without --every, --incrementals or --keep.")
        services.backup_schedule_remove(actor=actor, via=Via.CLI, vm=vm)
        return Outcome(f"{vm.name} is no longer backed up on a schedule; its backups stay.", None)
    current = BackupSchedule.objects.filter(vm=vm).first()
    if not given:
        return Outcome(schedule_text(current) if current else
                       f"{vm.name} has no backup schedule (set one with --every H --incrementals N --keep N).", None)
    if current is not None:  # change only what was given
        given = {"interval_hours": current.interval_hours, "incrementals": current.incrementals,
                 "keep_chains": current.keep_chains, **given}
    schedule = services.backup_schedule_set(actor=actor, via=Via.CLI, vm=vm, enabled=True, **given)
    return Outcome(schedule_text(schedule), None)


def register() -> None:
    """Add the verbs to `manage.py vm` (from BackupsConfig.ready)."""
    from vms.management.commands.vm import register_verb, register_vmless_verb

    register_verb("backup", help=BACKUP_HELP, add_arguments=backup_arguments, run=backup_run)
    register_verb("backup-schedule", help=SCHEDULE_HELP, add_arguments=schedule_arguments, run=schedule_run)
    register_vmless_verb("backups", help=BACKUPS_HELP, add_arguments=backups_arguments, run=backups_run)
    register_vmless_verb("restore", help=RESTORE_HELP, add_arguments=restore_arguments, run=restore_run)
    register_vmless_verb("delete-backup", help=DELETE_HELP, add_arguments=backup_id_arguments, run=delete_run)
    register_vmless_verb("finish-backup", help=FINISH_HELP, add_arguments=backup_id_arguments, run=finish_run)
