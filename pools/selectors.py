"""Reads about VM pools that depend on who asks: which pools a user may take from, what they hold."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import Count, Q, QuerySet

from portal.actors import Actor, is_admin, is_signed_in
from portal.exceptions import NotFound
from vms.choices import VMStatus
from vms.models import VM
from vms.validation import parse_id

from .models import PoolMember, VMPool

# A pool VM in one of these is gone or going: it no longer counts towards the pool's size.
GONE = (VMStatus.DELETING, VMStatus.DELETED)


def pool_visible(*, user: Actor) -> QuerySet[VMPool]:
    """Pools `user` may take a VM from: open to everyone, or to a group of theirs; all for staff."""
    qs = VMPool.objects.select_related("image", "flavor", "owner")
    if not is_signed_in(user):
        return qs.none()
    if is_admin(user):
        return qs
    return qs.filter(Q(everyone=True) | Q(pk__in=VMPool.groups.through.objects.filter(
        group__in=user.groups.all()).values("vmpool_id")))


def pool_list(*, user: Actor) -> QuerySet[VMPool]:
    """Visible pools with their counts: `n_free` (free and running), `n_taken`, `n_live` (not being deleted)."""
    live = ~Q(members__vm__status__in=GONE)
    return pool_visible(user=user).annotate(
        n_live=Count("members", filter=live),
        n_taken=Count("members", filter=live & Q(members__taken_by__isnull=False)),
        n_free=Count("members", filter=Q(members__taken_by__isnull=True, members__vm__status=VMStatus.RUNNING)),
    ).order_by("name")


def pool_get(*, user: Actor, key: object) -> VMPool:
    """One pool the user may take from, by name or id (others' are indistinguishable from missing ones)."""
    text = str(key).strip()
    pk = parse_id(text)
    qs = pool_list(user=user)
    found = qs.filter(pk=pk).first() if pk is not None else qs.filter(name=text).first()
    if found is None:
        raise NotFound(f"VM pool {text[:40]!r} not found.")
    return found


def pool_members(*, pool: VMPool) -> QuerySet[PoolMember]:
    """The pool's VMs that still exist, with who holds each."""
    return pool.members.exclude(vm__status=VMStatus.DELETED).select_related("vm", "taken_by").order_by("vm__name")


def pool_held(*, user: Actor, pool: VMPool | None = None) -> QuerySet[PoolMember]:
    """The pool VMs `user` holds now (of one pool, or all)."""
    if not is_signed_in(user):
        return PoolMember.objects.none()
    qs = PoolMember.objects.filter(taken_by=user).exclude(vm__status__in=GONE).select_related("vm", "pool")
    return qs.filter(pool=pool) if pool is not None else qs


def pool_member_of(*, vm: VM) -> PoolMember | None:
    """The pool membership of a VM, if it came from a pool."""
    return PoolMember.objects.select_related("pool", "taken_by").filter(vm=vm).first()


def taken_vm_ids(user: User) -> QuerySet:
    """Ids of the VMs `user` holds from pools (for the VM visibility grant in vms.access)."""
    return PoolMember.objects.filter(taken_by=user).values("vm_id")
