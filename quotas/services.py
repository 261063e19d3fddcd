"""Every rule about quotas: the reservation check (under a row lock), limit changes, and quota
requests (a user asks for more, an administrator approves or denies it once).

Every door (web page, Slack button, admin, API) calls these functions. Creation and decisions are
audited; `quota_request_created` and `quota_request_decided` are sent after the commit so adapters
(the Slack bot) can post to the admins' channel and tell the requester, whichever door was used.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import IntegrityError, transaction
from django.dispatch import Signal
from django.utils import timezone

from portal.actors import Actor, require_admin, require_user
from portal.audit import audit
from portal.exceptions import (
    Conflict,
    InvalidState,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    ValidationFailed,
)
from portal.models import AuditEvent

from .models import Quota, QuotaRequest
from .selectors import LIMITS, REASON_MAX, Limit, quota_request_summary, quota_usage

log = logging.getLogger(__name__)


def quota_get_or_create(*, user: Any = None, group: Group | None = None) -> Quota:
    """The quota row of a user (personal VMs) or a group (team VMs), created from the defaults."""
    lookup = {"user": user} if group is None else {"group": group}
    try:
        quota, _ = Quota.objects.get_or_create(**lookup, defaults=settings.DEFAULT_QUOTA)
    except IntegrityError:  # created concurrently
        quota = Quota.objects.get(**lookup)
    return quota


def quota_reserve(*, user: Any = None, group: Group | None = None, vcpus: int, memory_mib: int, disk_gib: int,
                  vms: int = 1, backup_gib: int = 0) -> Quota:
    """Lock the subject's quota row and check that one more VM of this size fits (`vms=0`: that an
    existing VM may grow by these amounts).

    Must run inside the transaction that then writes the VM row: the lock serialises concurrent
    creates of one subject, so twenty requests against a quota of three make exactly three VMs.
    """
    assert transaction.get_connection().in_atomic_block, "quota_reserve needs a transaction"
    quota_get_or_create(user=user, group=group)
    lookup = {"user": user} if group is None else {"group": group}
    quota = Quota.objects.select_for_update().get(**lookup)
    usage = {u.resource: u for u in quota_usage(user=user, group=group, quota=quota)}  # limits of the locked row
    wanted = {"vms": vms, "vcpus": vcpus, "memory_mib": memory_mib, "disk_gib": disk_gib, "backup_gib": backup_gib}
    for resource, amount in wanted.items():
        u = usage[resource]
        if amount and u.used + amount > u.limit:
            # What was asked for (a "request more" button offers it); backup space only when some was asked.
            asked = {k: v for k, v in wanted.items() if k != "backup_gib" or v}
            raise QuotaExceeded(resource=u.label, requested=amount, limit=u.limit, in_use=u.used, unit=u.unit,
                                requested_resources=asked, group_id=group.pk if group is not None else None)
    return quota


QUOTA_LIMIT_FIELDS = ("max_vms", "max_vcpus", "max_memory_mib", "max_disk_gib", "max_backup_gib")


def quota_set(*, actor: Actor, via: str, user: Any = None, group: Group | None = None, max_vms: int | None = None,
              max_vcpus: int | None = None, max_memory_mib: int | None = None,
              max_disk_gib: int | None = None, max_backup_gib: int | None = None) -> Quota:
    """Change the limits of a user's or a group's quota (created from the defaults if missing).

    Lowering a limit below the current usage is allowed: running VMs keep running, new ones are
    refused until usage drops. Every change is audited.
    """
    require_admin(actor, "Only administrators change quotas.")
    if (user is None) == (group is None):
        raise ValidationFailed("A quota belongs to exactly one user or one group.", field="user")
    wanted = {"max_vms": max_vms, "max_vcpus": max_vcpus, "max_memory_mib": max_memory_mib,
              "max_disk_gib": max_disk_gib, "max_backup_gib": max_backup_gib}
    errors = {f: ["Must be a whole number, 0 or more."] for f, v in wanted.items()
              if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0)}
    if errors:
        raise ValidationFailed(errors)
    lookup = {"user": user} if group is None else {"group": group}
    with transaction.atomic():
        quota_get_or_create(**lookup)
        quota = Quota.objects.select_for_update().get(**lookup)
        changes = {f: (getattr(quota, f), v) for f, v in wanted.items() if v is not None and v != getattr(quota, f)}
        if not changes:
            return quota
        for field, (_old, new) in changes.items():
            setattr(quota, field, new)
        quota.save(update_fields=[*changes, "updated_at"])
        audit(actor=actor, via=via, action="quota.update", target_type="quota", target_id=str(quota.pk),
              target_name=quota.subject_name,
              message="; ".join(f"{f}: {old} → {new}" for f, (old, new) in changes.items()),
              data={f: new for f, (_old, new) in changes.items()})
    return quota

# Sent after commit with `quota_request=`; receivers run robustly (a failing one changes nothing).
quota_request_created = Signal()
quota_request_decided = Signal()


def _check_actor(actor: Actor) -> User:
    return require_user(actor, "Sign in to request more quota.")


def _check_admin(actor: Actor) -> User:
    user = _check_actor(actor)
    if not user.is_staff:
        raise PermissionDenied("Only administrators can decide quota requests.")
    return user


def _validate_reason(reason: object) -> str:
    if reason is None:
        return ""
    if not isinstance(reason, str):
        raise ValidationFailed("Reason must be text.", field="reason")
    reason = reason.strip()
    if len(reason) > REASON_MAX:
        raise ValidationFailed(f"Reason is too long (at most {REASON_MAX} characters).", field="reason")
    if any(ord(c) < 32 and c not in "\n\t" for c in reason):
        raise ValidationFailed("Reason contains control characters.", field="reason")
    return reason


def _validate_limit(limit: Limit, value: object) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationFailed(f"{limit.label} must be a whole number.", field=limit.field)
    if value < 0 or value > limit.ceiling:
        unit = f" {limit.unit}" if limit.unit else ""
        raise ValidationFailed(f"{limit.label} must be between 0 and {limit.ceiling}{unit}.", field=limit.field)
    return value


def _emit(signal: Signal, request: QuotaRequest) -> None:
    def send() -> None:
        for receiver, result in signal.send_robust(sender=QuotaRequest, quota_request=request):
            if isinstance(result, Exception):
                log.error("%r failed for quota request %s", receiver, request.pk, exc_info=result)

    transaction.on_commit(send)


def quota_request_create(*, actor: Actor, via: str, group: Group | None = None, max_vms: object = None,
                         max_vcpus: object = None, max_memory_mib: object = None, max_disk_gib: object = None,
                         reason: str = "", max_backup_gib: object = None) -> QuotaRequest:
    """Record a request for higher limits (only increases count); one pending request per quota."""
    actor = _check_actor(actor)
    if group is not None and not actor.is_staff and not actor.groups.filter(pk=group.pk).exists():
        raise PermissionDenied(f"You are not a member of the group {group.name}.")
    reason = _validate_reason(reason)
    asked = {
        limit.field: _validate_limit(limit, value)
        for limit, value in zip(LIMITS, (max_vms, max_vcpus, max_memory_mib, max_disk_gib, max_backup_gib),
                                strict=True)
    }
    with transaction.atomic():
        quota_get_or_create(user=None if group else actor, group=group)
        lookup = {"group": group} if group is not None else {"user": actor}
        quota = Quota.objects.select_for_update().get(**lookup)  # serialises twin requests
        current = {limit.field: getattr(quota, limit.field) for limit in LIMITS}
        wanted = {f: v for f, v in asked.items() if v is not None and v > current[f]}
        if not wanted:
            now = ", ".join(f"{limit.label} {current[limit.field]}" for limit in LIMITS)
            raise ValidationFailed(f"Ask for more than the current quota ({now}).")
        pending = QuotaRequest.objects.filter(requester=actor, group=group, status=QuotaRequest.Status.PENDING)
        existing = pending.first()
        if existing is not None:
            raise Conflict(f"You already have a pending quota request (#{existing.pk}); "
                           "an administrator will decide it soon.", request_id=existing.pk)
        request = QuotaRequest.objects.create(requester=actor, group=group, via=via, reason=reason,
                                              previous=current, **wanted)
        summary = quota_request_summary(request)
        audit(actor=actor, via=via, action="quota_request.create", target=request,
              target_name=f"#{request.pk} {request.subject_name}", outcome=AuditEvent.Outcome.REQUESTED,
              message=f"Asked for {summary}" + (f": {reason}" if reason else ""),
              data={"requested": wanted, "previous": current})
        _emit(quota_request_created, request)
    return request


def quota_request_for_size(*, actor: Actor, via: str, vcpus: int, memory_mib: int, disk_gib: int,
                           group: Group | None = None, reason: str = "", vms: int = 1,
                           backup_gib: int = 0) -> QuotaRequest:
    """Ask for just enough quota for one more VM of this size (the "Request more" button); `vms=0`:
    for an existing VM to grow by these amounts."""
    actor = _check_actor(actor)
    need = {"vms": vms, "vcpus": vcpus, "memory_mib": memory_mib, "disk_gib": disk_gib, "backup_gib": backup_gib}
    limits = {}
    for usage in quota_usage(user=None if group else actor, group=group):
        amount = need[usage.resource]
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise ValidationFailed(f"{usage.label} must be a whole number.", field=usage.resource)
        limits[f"max_{usage.resource}"] = max(usage.limit, usage.used + amount)
    if not reason and vms:
        reason = f"For a new VM of {vcpus} vCPU, {memory_mib} MiB, {disk_gib} GiB."
    elif not reason:
        reason = f"To grow a VM by {vcpus} vCPU, {memory_mib} MiB, {disk_gib} GiB."
    return quota_request_create(actor=actor, via=via, group=group, reason=reason, **limits)


def _lock_pending(request: QuotaRequest | int) -> QuotaRequest:
    pk = request.pk if isinstance(request, QuotaRequest) else request
    try:
        request = QuotaRequest.objects.select_for_update().get(pk=pk)
    except (QuotaRequest.DoesNotExist, ValueError, TypeError):
        raise NotFound(f"Quota request #{pk} not found.") from None
    if not request.is_pending:
        by = f" by {request.decided_by.get_username()}" if request.decided_by is not None else ""
        raise InvalidState(f"Quota request #{request.pk} was already {request.get_status_display().lower()}{by}.",
                           status=request.status)
    return request


def _decide(request: QuotaRequest, *, actor: User, via: str, status: str, note: str) -> None:
    request.status = status
    request.decided_by = actor if getattr(actor, "pk", None) else None
    request.decided_at = timezone.now()
    request.decided_via = via
    request.decision_note = note
    request.save(update_fields=["status", "decided_by", "decided_at", "decided_via", "decision_note"])


def quota_request_approve(*, actor: Actor, via: str, request: QuotaRequest | int, note: str = "") -> QuotaRequest:
    """Raise the quota to the limits asked for (never lowering one) and close the request."""
    actor = _check_admin(actor)
    note = _validate_reason(note)
    with transaction.atomic():
        request = _lock_pending(request)
        subject = {"group": request.group} if request.group_id else {"user": request.requester}
        quota_get_or_create(**subject)
        quota = Quota.objects.select_for_update().get(**subject)
        raised = {limit.field: getattr(request, limit.field) for limit in LIMITS
                  if getattr(request, limit.field) is not None
                  and getattr(request, limit.field) > getattr(quota, limit.field)}
        quota_set(actor=actor, via=via, **subject, **raised)  # audited there as quota.update
        _decide(request, actor=actor, via=via, status=QuotaRequest.Status.APPROVED, note=note)
        audit(actor=actor, via=via, action="quota_request.approve", target=request,
              target_name=f"#{request.pk} {request.subject_name}",
              message=f"Approved {quota_request_summary(request)}" + (f": {note}" if note else ""),
              data={"raised": raised})
        _emit(quota_request_decided, request)
    return request


def quota_request_deny(*, actor: Actor, via: str, request: QuotaRequest | int, note: str = "") -> QuotaRequest:
    """Close the request without changing the quota."""
    actor = _check_admin(actor)
    note = _validate_reason(note)
    with transaction.atomic():
        request = _lock_pending(request)
        _decide(request, actor=actor, via=via, status=QuotaRequest.Status.DENIED, note=note)
        audit(actor=actor, via=via, action="quota_request.deny", target=request,
              target_name=f"#{request.pk} {request.subject_name}", outcome=AuditEvent.Outcome.DENIED,
              message=f"Denied {quota_request_summary(request)}" + (f": {note}" if note else ""))
        _emit(quota_request_decided, request)
    return request


def quota_request_cancel(*, actor: Actor, via: str, request: QuotaRequest | int) -> QuotaRequest:
    """The requester withdraws a pending request."""
    actor = _check_actor(actor)
    with transaction.atomic():
        request = _lock_pending(request)
        if request.requester_id != actor.pk:
            raise NotFound(f"Quota request #{request.pk} not found.")
        _decide(request, actor=actor, via=via, status=QuotaRequest.Status.CANCELLED, note="")
        audit(actor=actor, via=via, action="quota_request.cancel", target=request,
              target_name=f"#{request.pk} {request.subject_name}", message="Withdrawn by the requester")
    return request
