"""Quota reads: limits, usage (from the registered providers) and the requests a user may see."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import Group
from django.db.models import Q, QuerySet

from portal.actors import Actor, is_admin, is_signed_in
from portal.exceptions import NotFound

from .models import Quota, QuotaRequest
from .usage import RESOURCES, ResourceUsage, usage_in


def quota_limits(*, user: Actor = None, group: Group | None = None) -> dict[str, int]:
    """The limits of a user's personal quota or a group's: its row, or the defaults while it has none."""
    lookup = {"user": user} if group is None else {"group": group}
    quota = Quota.objects.filter(**lookup).first() if getattr(user, "pk", None) or group is not None else None
    if quota is None:
        return {field: int(settings.DEFAULT_QUOTA.get(field, 0)) for *_rest, field in RESOURCES}
    return {field: getattr(quota, field) for *_rest, field in RESOURCES}


def quota_usage(*, user: Actor = None, group: Group | None = None, quota: Quota | None = None) -> list[ResourceUsage]:
    """Used and limit per resource, for a user's personal quota or for a group's (`quota`: its row,
    when the caller holds it already)."""
    limits = ({field: getattr(quota, field) for *_rest, field in RESOURCES} if quota is not None
              else quota_limits(user=user, group=group))
    used = usage_in(user=user, group=group)
    return [ResourceUsage(resource, label, unit, used.get(resource, 0), limits[field])
            for resource, label, unit, field in RESOURCES]


@dataclass(frozen=True)
class Limit:
    field: str
    label: str
    unit: str
    ceiling: int


LIMITS = (
    Limit("max_vms", "VMs", "", 1000),
    Limit("max_vcpus", "vCPUs", "", 10_000),
    Limit("max_memory_mib", "Memory", "MiB", 64 * 1024 * 1024),
    Limit("max_disk_gib", "Disk", "GiB", 1024 * 1024),
    Limit("max_backup_gib", "Backup space", "GiB", 1024 * 1024),  # backups (issue #11)
)
REASON_MAX = 1000


@dataclass(frozen=True)
class LimitChange:
    """One limit a request changes: from the limit at request time to the limit asked for."""

    label: str
    unit: str
    old: int
    new: int

    def __str__(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.label} {self.old} → {self.new}{unit}"


def quota_request_changes(request: QuotaRequest) -> list[LimitChange]:
    """The limits `request` asks to change, in a fixed order (for every door's wording)."""
    changes = []
    for limit in LIMITS:
        new = getattr(request, limit.field)
        if new is not None:
            changes.append(LimitChange(limit.label, limit.unit, int(request.previous.get(limit.field, 0)), new))
    return changes


def quota_request_summary(request: QuotaRequest) -> str:
    return ", ".join(str(c) for c in quota_request_changes(request)) or "no change"



def quota_request_list(*, user: Actor, status: str | None = None) -> QuerySet[QuotaRequest]:
    """Requests `user` may see: their own and their groups', or all for administrators."""
    qs = QuotaRequest.objects.select_related("requester", "group", "decided_by")
    if not is_signed_in(user):
        return qs.none()
    if not is_admin(user):
        # `group` is a foreign key: an id subquery, no join, so no DISTINCT (issue #13).
        qs = qs.filter(Q(requester=user) | Q(group__in=user.groups.all()))
    if status:
        qs = qs.filter(status=status)
    return qs


def quota_request_pending(*, user: Actor) -> QuotaRequest | None:
    """The user's own pending request for their personal quota, if any (one at a time)."""
    return quota_request_list(user=user, status=QuotaRequest.Status.PENDING).filter(
        requester_id=getattr(user, "pk", None), group__isnull=True).first()


def quota_request_get(*, user: Actor, request_id: object) -> QuotaRequest:
    try:
        return quota_request_list(user=user).get(pk=int(str(request_id)))
    except (QuotaRequest.DoesNotExist, ValueError):
        raise NotFound(f"Quota request #{str(request_id)[:20]} not found.") from None
