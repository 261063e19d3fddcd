"""Reads about backups that depend on who asks."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from portal.actors import Actor, is_admin, is_signed_in
from portal.exceptions import NotFound
from storage.models import StoragePool
from vms.models import VM
from vms.selectors import vm_visible

from .models import Backup


def backups_visible(actor: Actor) -> QuerySet[Backup]:
    """Backups the actor may see: of VMs they may see, and their own (also of deleted VMs); all for admins."""
    qs = Backup.objects.select_related("vm", "owner", "group", "parent", "pool")
    if not is_signed_in(actor):
        return qs.none()
    if is_admin(actor):
        return qs
    # `vm` and `group` are foreign keys: id subqueries, never joins, so no DISTINCT over whole rows (issue #13).
    return qs.filter(Q(owner=actor) | Q(vm__in=vm_visible(user=actor).values("pk"))
                     | Q(group__in=actor.groups.all()))


def backup_get(*, actor: Actor, key: Backup | int | str) -> Backup:
    """One visible backup by id or UUID (NotFound otherwise)."""
    qs = backups_visible(actor)
    text = str(key.pk if isinstance(key, Backup) else key).strip()
    found = None
    if text.isascii() and text.isdigit() and len(text) <= 18:  # "²".isdigit() is True; int() refuses it
        found = qs.filter(pk=int(text)).first()
    elif len(text) in (32, 36):
        try:
            found = qs.filter(uuid=text).first()
        except Exception:  # not a UUID
            found = None
    if found is None:
        raise NotFound(f"Backup {text[:40]} not found.")
    return found


def vm_backups(*, actor: Actor, vm: VM) -> list[Backup]:
    """The VM's backups, newest first."""
    return list(backups_visible(actor).filter(vm=vm).order_by("-created_at", "-id"))


def backup_chain(backup: Backup) -> list[Backup]:
    """The chain a restore of `backup` reads: its full backup first, then each incremental up to it."""
    chain = [backup]
    seen = {backup.pk}
    while chain[0].parent_id is not None:
        parent = Backup.objects.filter(pk=chain[0].parent_id).first()
        if parent is None or parent.pk in seen:
            break
        seen.add(parent.pk)
        chain.insert(0, parent)
    return chain


def backup_quota_usage(*, user: Any = None, group: Any = None) -> dict[str, int]:
    """Backup space charged to a user's personal quota or a group's (quotas' usage provider): the real
    size of ready backups, the estimate of those being made, rounded up to whole GiB."""
    live = Backup.objects.exclude(status=Backup.Status.FAILED)
    live = live.filter(group=group) if group is not None else live.filter(owner=user, group__isnull=True)
    total = sum(live.values_list("size_bytes", flat=True))
    return {"backup_gib": -(-total // 1024**3)}


def backup_owned_ids(*, user: Actor) -> QuerySet:
    """Ids of the backups a user may see (job visibility): a subquery, not a list."""
    return backups_visible(user).order_by().values_list("pk", flat=True)


def backup_pool_users(pool: StoragePool) -> list[str]:
    """The backups whose files are in `pool` (registered with storage.usage: such a domain is not removed)."""
    rows = Backup.objects.filter(pool=pool).order_by("-created_at").values_list("pk", "vm_name")[:6]
    total = Backup.objects.filter(pool=pool).count()
    out = [f"backup {pk} of {name}" for pk, name in rows[:5]]
    if total > 5:
        out.append(f"{total - 5} more backups")
    return out
