"""Quota subjects, usage and the reservation check (run under a row lock inside vm_create)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Sum
from django.db.models.functions import Coalesce

from .exceptions import QuotaExceeded
from .models import Quota


@dataclass(frozen=True)
class ResourceUsage:
    resource: str
    label: str
    unit: str
    used: int
    limit: int

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    @property
    def percent(self) -> int:
        if self.limit <= 0:
            return 100
        return min(100, round(100 * self.used / self.limit))


def quota_get_or_create(*, user=None, group=None) -> Quota:
    """The quota row of a user (personal VMs) or a group (team VMs), created from the defaults."""
    lookup = {"user": user} if group is None else {"group": group}
    try:
        quota, _ = Quota.objects.get_or_create(**lookup, defaults=settings.DEFAULT_QUOTA)
    except IntegrityError:  # created concurrently
        quota = Quota.objects.get(**lookup)
    return quota


def _charged_vms(*, user=None, group=None):
    from vms.choices import VMStatus
    from vms.models import VM

    qs = VM.objects.filter(status__in=VMStatus.COUNTED)
    if group is not None:
        return qs.filter(group=group)
    return qs.filter(owner=user, group__isnull=True)


def quota_usage(*, user=None, group=None) -> list[ResourceUsage]:
    quota = quota_get_or_create(user=user, group=group)
    agg = _charged_vms(user=user, group=group).aggregate(
        vms=Count("id"),
        vcpus=Coalesce(Sum("vcpus"), 0),
        memory=Coalesce(Sum("memory_mib"), 0),
        disk=Coalesce(Sum("disk_gib"), 0),
    )
    return [
        ResourceUsage("vms", "VMs", "", agg["vms"], quota.max_vms),
        ResourceUsage("vcpus", "vCPUs", "", agg["vcpus"], quota.max_vcpus),
        ResourceUsage("memory_mib", "Memory", "MiB", agg["memory"], quota.max_memory_mib),
        ResourceUsage("disk_gib", "Disk", "GiB", agg["disk"], quota.max_disk_gib),
    ]


def quota_reserve(*, user=None, group=None, vcpus: int, memory_mib: int, disk_gib: int, vms: int = 1) -> Quota:
    """Lock the subject's quota row and check that one more VM of this size fits (`vms=0`: that an
    existing VM may grow by these amounts).

    Must run inside the transaction that then writes the VM row: the lock serialises concurrent
    creates of one subject, so twenty requests against a quota of three make exactly three VMs.
    """
    assert transaction.get_connection().in_atomic_block, "quota_reserve needs a transaction"
    quota_get_or_create(user=user, group=group)
    lookup = {"user": user} if group is None else {"group": group}
    quota = Quota.objects.select_for_update().get(**lookup)
    usage = {u.resource: u for u in quota_usage(user=user, group=group)}
    wanted = {"vms": vms, "vcpus": vcpus, "memory_mib": memory_mib, "disk_gib": disk_gib}
    for resource, amount in wanted.items():
        u = usage[resource]
        if amount and u.used + amount > u.limit:
            raise QuotaExceeded(resource=u.label, requested=amount, limit=u.limit, in_use=u.used, unit=u.unit,
                                requested_resources=wanted, group_id=group.pk if group is not None else None)
    return quota


QUOTA_LIMIT_FIELDS = ("max_vms", "max_vcpus", "max_memory_mib", "max_disk_gib")


def quota_set(*, actor, via: str, user=None, group=None, max_vms: int | None = None,
              max_vcpus: int | None = None, max_memory_mib: int | None = None,
              max_disk_gib: int | None = None) -> Quota:
    """Change the limits of a user's or a group's quota (created from the defaults if missing).

    Lowering a limit below the current usage is allowed: running VMs keep running, new ones are
    refused until usage drops. Every change is audited.
    """
    from .audit import audit
    from .exceptions import ValidationFailed

    if (user is None) == (group is None):
        raise ValidationFailed("A quota belongs to exactly one user or one group.", field="user")
    wanted = {"max_vms": max_vms, "max_vcpus": max_vcpus, "max_memory_mib": max_memory_mib,
              "max_disk_gib": max_disk_gib}
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
