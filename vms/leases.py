"""VM leases (issue #14): a VM may carry an expiry; owners are reminded, extend within policy, and the
monitor's housekeeping pass stops expired VMs, then deletes them after a grace period if policy says so.

Which rules apply: the VM's group's `LeasePolicy` (the most specific), each blank field taking the
site's setting (`PORTAL_LEASE_*`); a VM without a group (or whose group has no policy) follows the
site's settings. Administrators are not bound by policy: they may set any expiry or remove it.

Every time is read from `django.utils.timezone.now()` (or the `now` given to `lease_pass`), so tests
move the clock instead of sleeping. Owners hear of reminders and expiry through the signals below
(chatops sends Slack direct messages; vms never imports chatops); each notice is recorded
(`LeaseNotice`) and so sent once per lease end: an extension starts a fresh set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from portal.actors import Actor, require_admin, require_user
from portal.audit import audit
from portal.choices import JobStatus, Via
from portal.exceptions import InvalidState, NotFound, PortalError, ValidationFailed
from portal.models import AuditEvent, Job

from .access import check_action
from .choices import VMStatus
from .lease_policy import check_policy, fmt_when, lease_rules, parse_lease_days, parse_until
from .models import VM, LeaseNotice
from .selectors import vm_visible
from .services import vm_delete, vm_force_off, vm_publish, vm_stop

log = logging.getLogger("vms.leases")

# Sent after a reminder was recorded: `vm`, `expires_at`, `days_before` (the most urgent one due).
lease_reminder = Signal()
# Sent after the expiry pass acted on a VM: `vm`, `expires_at`, `what` ("stopped" or "deleted").
lease_expired = Signal()


def _lock(*, actor: Actor, vm: VM | int) -> VM:
    user = require_user(actor, "Sign in to manage VMs.")
    pk = vm.pk if isinstance(vm, VM) else vm
    if not vm_visible(user=user).filter(pk=pk).exists():
        raise NotFound(f"VM {pk} not found.")
    locked = VM.objects.select_for_update().get(pk=pk)
    if locked.status in (VMStatus.DELETING, VMStatus.DELETED):
        raise InvalidState(f"{locked.name} is being deleted: its lease cannot change.", status=locked.status)
    return locked


def _write(vm: VM, expires_at: datetime | None) -> None:
    vm.expires_at, vm.lease_stopped_at = expires_at, None
    VM.objects.filter(pk=vm.pk).update(expires_at=expires_at, lease_stopped_at=None, updated_at=timezone.now())


def vm_lease_extend(*, actor: Actor, via: str, vm: VM | int, days: object = None, until: object = None) -> VM:
    """Move the VM's lease end: `days` more (from the current end, or from now once expired) or `until` a date.
    Owners stay within the policy (max extension, max lease, max total); administrators may set any end."""
    user = require_user(actor, "Sign in to manage VMs.")
    n = parse_lease_days(days, field="days")
    if (n is None) == (until is None or until == ""):
        raise ValidationFailed("Give either the days to add (e.g. 7) or the date the lease should end.", field="days")
    if n == 0:
        raise ValidationFailed("Extend by at least one day.", field="days")
    target_field = "days" if n is not None else "until"
    refused: ValidationFailed | None = None
    with transaction.atomic():
        locked = _lock(actor=user, vm=vm)
        check_action(actor=user, vm=locked, verb="lease")  # registered guards (vms.access: pools)
        now = timezone.now()
        old = locked.expires_at
        base = max(old, now) if old is not None else now
        try:
            target = base + timedelta(days=n) if n is not None else parse_until(until)
        except OverflowError:  # an end set before dates were bounded (parse_until), near year 9999
            raise ValidationFailed(f"The lease of {locked.name} ends too far away to extend it.",
                                   field=target_field) from None
        if not user.is_staff:
            try:
                check_policy(rules=lease_rules(locked.group), target=target, now=now, created_at=locked.created_at,
                              base=base, field=target_field)
            except ValidationFailed as exc:
                refused = exc
        if refused is None:
            _write(locked, target)
            audit(actor=user, via=via, action="vm.lease.extend", target=locked,
                  message=f"Lease of {locked.name} now ends {fmt_when(target)}"
                          + (f" (was {fmt_when(old)})" if old else " (had no lease)"),
                  data={"expires_at": target.isoformat(), "previous": old.isoformat() if old else None})
            vm_publish(locked)
    if refused is not None:  # audited outside the transaction, which wrote nothing
        audit(actor=user, via=via, action="vm.lease.extend", target=locked, outcome=AuditEvent.Outcome.DENIED,
              message=refused.message)
        raise refused
    return locked


def vm_lease_set(*, actor: Actor, via: str, vm: VM | int, expires_at: object) -> VM:
    """Administrators: set the VM's lease end to anything, or remove the lease (`expires_at` None)."""
    user = require_user(actor, "Sign in to manage VMs.")
    require_admin(user, "Only administrators can set any lease end or remove a lease; extend it within the policy.")
    target = None if expires_at is None or expires_at == "" else parse_until(expires_at, field="expires_at")
    with transaction.atomic():
        locked = _lock(actor=user, vm=vm)
        old = locked.expires_at
        _write(locked, target)
        audit(actor=user, via=via, action="vm.lease.set", target=locked,
              message=(f"Lease of {locked.name} set to end {fmt_when(target)}" if target
                       else f"Lease of {locked.name} removed"),
              data={"expires_at": target.isoformat() if target else None,
                    "previous": old.isoformat() if old else None})
        vm_publish(locked)
    return locked


# --- what pages show ----------------------------------------------------------------------------

@dataclass(frozen=True)
class LeaseState:
    """A VM's lease as pages show it."""

    expires_at: datetime
    expired: bool
    soon: bool  # within the first reminder's reach
    delete_at: datetime | None  # when an expired VM is deleted (policy), else None


def lease_state(vm: VM, *, now: datetime | None = None, with_policy: bool = True) -> LeaseState | None:
    """None without a lease; `soon` within the earliest reminder (PORTAL_LEASE_REMINDER_DAYS). Without
    `with_policy` (lists: no query per row) `delete_at` stays None."""
    if vm.expires_at is None:
        return None
    now = now or timezone.now()
    reach = max(settings.LEASE_REMINDER_DAYS or [0])
    expired = vm.expires_at <= now
    delete_at = None
    if expired and with_policy:
        rules = lease_rules(vm.group)
        delete_at = vm.expires_at + timedelta(days=rules.grace_days) if rules.delete_expired else None
    return LeaseState(vm.expires_at, expired, not expired and vm.expires_at - now <= timedelta(days=reach), delete_at)


# --- the housekeeping pass ------------------------------------------------------------------------

def _notice_once(vm: VM, kind: str, now: datetime, days_before: int = 0) -> bool:
    """Record a notice; False when it was recorded already (the notice was sent)."""
    assert vm.expires_at is not None
    _, created = LeaseNotice.objects.get_or_create(vm=vm, expires_at=vm.expires_at, kind=kind,
                                                   days_before=days_before, defaults={"sent_at": now})
    return created


def _remind(now: datetime, counts: dict[str, int]) -> None:
    days = sorted({d for d in settings.LEASE_REMINDER_DAYS if d > 0})
    if not days:
        return
    due_vms = (VM.objects.exclude(status__in=(VMStatus.DELETING, VMStatus.DELETED))
               .filter(expires_at__gt=now, expires_at__lte=now + timedelta(days=days[-1])).select_related("owner"))
    for vm in due_vms:
        assert vm.expires_at is not None
        due = [d for d in days if vm.expires_at - now <= timedelta(days=d)]
        fresh = [d for d in due if _notice_once(vm, LeaseNotice.Kind.REMINDER, now, d)]
        if not fresh:
            continue
        # A clock that jumped past several reminders says the most urgent one, once; all are recorded.
        audit(actor=None, via=Via.SYSTEM, action="vm.lease.reminder", target=vm,
              message=f"Lease of {vm.name} ends {fmt_when(vm.expires_at)}: owner reminded ({min(fresh)} days before)",
              data={"expires_at": vm.expires_at.isoformat(), "days_before": min(fresh)})
        lease_reminder.send(sender=VM, vm=vm, expires_at=vm.expires_at, days_before=min(fresh))
        counts["reminded"] += 1


_POWER_JOBS = ("vm.stop", "vm.force_off", "vm.start")


def _last_power_job(vm: VM) -> Job | None:
    return (Job.objects.filter(target_type="vm", target_id=str(vm.pk), kind__in=_POWER_JOBS)
            .order_by("-created_at", "-id").first())


def _stop_expired(vm: VM, now: datetime, counts: dict[str, int]) -> None:
    """Graceful stop first (ACPI, the normal vm.stop job); a VM still running after that job failed (the guest
    ignored the signal within STOP_TIMEOUT_SECONDS) is forced off on a later turn; a paused one at once."""
    force = vm.status != VMStatus.RUNNING
    if vm.lease_stopped_at is not None and not force:
        # The pass asked before: if its stop (the system's, the VM's last power job) failed, the guest ignored
        # the signal; anything since (the owner started it again) means a fresh graceful stop.
        last = _last_power_job(vm)
        if last is not None and last.via == Via.SYSTEM and last.kind == "vm.stop":
            if last.status not in JobStatus.FINISHED:
                return  # the stop is still under way
            force = last.status in (JobStatus.FAILED, JobStatus.ERRORED)
    VM.objects.filter(pk=vm.pk).update(lease_stopped_at=now)
    vm.lease_stopped_at = now
    result = (vm_force_off if force else vm_stop)(actor=None, via=Via.SYSTEM, vm=vm.pk)
    audit(actor=None, via=Via.SYSTEM, action="vm.lease.expired", target=vm, job=result.job,
          message=f"Lease of {vm.name} ended {fmt_when(vm.expires_at or now)}: "
                  + ("forced off (it did not shut down)" if force and vm.status == VMStatus.RUNNING
                     else "forced off" if force else "stopping"),
          data={"expires_at": (vm.expires_at or now).isoformat(), "force": force})
    counts["forced" if force else "stopped"] += 1
    if vm.expires_at is not None and _notice_once(vm, LeaseNotice.Kind.EXPIRED, now):
        lease_expired.send(sender=VM, vm=vm, expires_at=vm.expires_at, what="stopped")


def _expire(vm: VM, now: datetime, counts: dict[str, int]) -> None:
    if vm.status in VMStatus.TRANSITIONAL:
        return  # a job owns the VM: next turn
    if vm.status in (VMStatus.RUNNING, VMStatus.PAUSED):
        _stop_expired(vm, now, counts)
        return
    if vm.status not in (VMStatus.STOPPED, VMStatus.ERROR):
        return  # unknown (host unreachable) and the like: wait until it is known
    assert vm.expires_at is not None
    if _notice_once(vm, LeaseNotice.Kind.EXPIRED, now):
        if vm.lease_stopped_at is None:  # stopped already (by its owner): nothing to do but say so
            audit(actor=None, via=Via.SYSTEM, action="vm.lease.expired", target=vm,
                  message=f"Lease of {vm.name} ended {fmt_when(vm.expires_at)}: it is stopped",
                  data={"expires_at": vm.expires_at.isoformat(), "force": False})
        lease_expired.send(sender=VM, vm=vm, expires_at=vm.expires_at, what="stopped")
    rules = lease_rules(vm.group)
    if not rules.delete_expired or now < vm.expires_at + timedelta(days=rules.grace_days):
        return
    result = vm_delete(actor=None, via=Via.SYSTEM, vm=vm.pk)
    audit(actor=None, via=Via.SYSTEM, action="vm.lease.deleted", target=vm, job=result.job,
          message=f"Deleting {vm.name}: its lease ended {fmt_when(vm.expires_at)} and the {rules.grace_days}-day grace "
                  f"period is over ({rules.source} policy)",
          data={"expires_at": vm.expires_at.isoformat(), "grace_days": rules.grace_days})
    counts["deleted"] += 1
    if _notice_once(vm, LeaseNotice.Kind.DELETED, now):
        lease_expired.send(sender=VM, vm=vm, expires_at=vm.expires_at, what="deleted")


def lease_pass(*, now: datetime | None = None) -> dict[str, int]:
    """One turn (cluster.housekeeping, on the monitor leader): remind owners of leases ending soon, stop
    expired VMs (force off one that ignored the stop), delete them after the grace period where policy says.
    Acts as the system (audited with via=system). Returns what it did."""
    now = now or timezone.now()
    counts = {"reminded": 0, "stopped": 0, "forced": 0, "deleted": 0, "failed": 0}
    _remind(now, counts)
    expired = (VM.objects.exclude(status__in=(VMStatus.DELETING, VMStatus.DELETED))
               .filter(expires_at__lte=now).select_related("owner", "group", "host").order_by("expires_at", "id"))
    for vm in expired:
        # vm_stop and vm_delete lock the row and queue their jobs on commit: one VM's refusal (its host not
        # answering, a snapshot under way) never holds up the others.
        try:
            _expire(vm, now, counts)
        except PortalError as exc:
            counts["failed"] += 1
            log.warning("lease expiry of VM %s: %s", vm.pk, exc.message)
    return counts
