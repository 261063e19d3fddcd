"""Every rule about VM pools: creating and changing them (administrators), taking and returning a VM,
and the replenish pass that keeps K free VMs running.

Ownership and quota: a pool's VMs are owned by `VMPool.owner` (the administrator who made the pool, or
an account an administrator names) and charge that owner's personal quota. The taker only borrows a
VM (vms.access grants them visibility while they hold it), so taking one never touches their quota.
Deleting a pool deletes its free VMs; it is refused while any VM is taken (return them first).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth.models import Group, User
from django.db import transaction
from django.utils import timezone

from portal.actors import Actor, is_admin, require_admin, require_user
from portal.audit import audit
from portal.choices import Via
from portal.exceptions import (
    Conflict,
    InvalidState,
    NotFound,
    PermissionDenied,
    PortalError,
    ValidationFailed,
)
from portal.models import AuditEvent
from storage.models import Image
from storage.selectors import image_get
from vms.choices import VMStatus
from vms.models import VM, Flavor
from vms.selectors import flavor_get
from vms.services import vm_create, vm_delete, vm_reset, vm_start
from vms.validation import validate_size

from .models import PoolMember, VMPool
from .selectors import GONE, pool_visible

log = logging.getLogger(__name__)

POOL_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,30}")
MAX_POOL_SIZE = 200


@dataclass(frozen=True)
class TakeResult:
    """The VM given to the user, and a message."""

    vm: VM
    message: str


def _admin(actor: Actor) -> User:
    user = require_admin(actor, "Only administrators manage VM pools.")
    if user is None:
        raise PermissionDenied("Only administrators manage VM pools.")
    return user


def _validate_name(name: object) -> str:
    if not isinstance(name, str) or not POOL_NAME_RE.fullmatch(name):
        raise ValidationFailed("Pool names are 1-31 characters: lower-case letters, digits and hyphens, starting "
                               "with a letter (its VMs are named <pool>-01, <pool>-02, ...).", field="name")
    return name


def _count(value: object, field: str, *, low: int, high: int) -> int:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise ValidationFailed(f"{field.replace('_', ' ').capitalize()} must be a whole number.", field=field) from None
    if not low <= number <= high:
        raise ValidationFailed(f"{field.replace('_', ' ').capitalize()} must be between {low} and {high}.", field=field)
    return number


def _groups(names: Iterable[Group | str]) -> list[Group]:
    found = []
    for item in names:
        if isinstance(item, Group):
            found.append(item)
            continue
        group = Group.objects.filter(name=str(item).strip()).first()
        if group is None:
            raise ValidationFailed(f"No group named {str(item)[:40]!r}.", field="groups")
        found.append(group)
    return found


def _apply(pool: VMPool, *, actor: User, fields: dict[str, object]) -> None:
    """Validate and set the changeable fields given (None: unchanged)."""
    if fields.get("description") is not None:
        pool.description = str(fields["description"])[:200]
    if fields.get("image") is not None:
        image = fields["image"]
        pool.image = image if isinstance(image, Image) else image_get(user=actor, name_or_id=image)
        if pool.image.kind == Image.Kind.ISO:
            raise ValidationFailed(f"{pool.image.name} is an ISO: a pool needs a disk image or a template.",
                                   field="image")
    if "flavor" in fields and fields["flavor"] is not None:
        flavor = fields["flavor"]
        pool.flavor = None if flavor == "" else flavor if isinstance(flavor, Flavor) else flavor_get(
            user=actor, name_or_id=flavor)
    for key in ("vcpus", "memory_mib", "disk_gib"):
        if fields.get(key) not in (None, ""):
            setattr(pool, key, validate_size(key, fields[key]))
    if fields.get("prestarted") is not None:
        pool.prestarted = _count(fields["prestarted"], "prestarted", low=0, high=MAX_POOL_SIZE)
    if fields.get("max_size") is not None:
        pool.max_size = _count(fields["max_size"], "max_size", low=1, high=MAX_POOL_SIZE)
    if pool.prestarted > pool.max_size:
        raise ValidationFailed(f"Pre-started VMs ({pool.prestarted}) cannot exceed the pool's maximum size "
                               f"({pool.max_size}).", field="prestarted")
    for key in ("stateless", "everyone"):
        if fields.get(key) is not None:
            setattr(pool, key, bool(fields[key]))
    if fields.get("owner") is not None:
        owner = fields["owner"]
        owner = owner if isinstance(owner, User) else User.objects.filter(username=str(owner)).first()
        if owner is None or not owner.is_active:
            raise ValidationFailed("The pool's owner must be an active account.", field="owner")
        pool.owner = owner


def pool_create(*, actor: Actor, via: str, name: str, image: Image | str | int, description: str = "",
                flavor: Flavor | str | None = None, vcpus: object = None, memory_mib: object = None,
                disk_gib: object = None, prestarted: object = 1, max_size: object = 5, stateless: bool = True,
                everyone: bool = False, groups: Iterable[Group | str] = (), owner: User | str | None = None) -> VMPool:
    """Define a pool (administrators). Its VMs appear with the next replenish pass (or `pool_replenish`)."""
    user = _admin(actor)
    name = _validate_name(name)
    pool = VMPool(name=name, owner=user)
    _apply(pool, actor=user, fields={"description": description, "image": image, "flavor": flavor, "vcpus": vcpus,
                                     "memory_mib": memory_mib, "disk_gib": disk_gib, "prestarted": prestarted,
                                     "max_size": max_size, "stateless": stateless, "everyone": everyone,
                                     "owner": owner})
    found = _groups(groups)
    with transaction.atomic():
        if VMPool.objects.filter(name=name).exists():
            raise ValidationFailed(f"A VM pool named {name!r} exists already.", field="name")
        pool.save()
        pool.groups.set(found)
        audit(actor=user, via=via, action="pool.create", target=pool,
              message=f"Create VM pool {name}: image {pool.image.name}, {pool.prestarted} pre-started, at most "
                      f"{pool.max_size}{', stateless' if pool.stateless else ''}",
              data={"owner": pool.owner.get_username(), "groups": [g.name for g in found]})
    return pool


def pool_update(*, actor: Actor, via: str, pool: VMPool | int, groups: Iterable[Group | str] | None = None,
                **fields: object) -> VMPool:
    """Change a pool (administrators): sizes, K and the maximum, who may take, stateless. Existing VMs keep
    their image and size; VMs made later follow the new settings."""
    user = _admin(actor)
    allowed = {"description", "image", "flavor", "vcpus", "memory_mib", "disk_gib", "prestarted", "max_size",
               "stateless", "everyone", "owner"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValidationFailed(f"Unknown field(s): {', '.join(sorted(unknown))}.")
    with transaction.atomic():
        pool = VMPool.objects.select_for_update().get(pk=pool.pk if isinstance(pool, VMPool) else pool)
        _apply(pool, actor=user, fields=fields)
        pool.save()
        if groups is not None:
            pool.groups.set(_groups(groups))
        audit(actor=user, via=via, action="pool.update", target=pool, message=f"Change VM pool {pool.name}",
              data={k: str(v) for k, v in fields.items()})
    return pool


def pool_delete(*, actor: Actor, via: str, pool: VMPool | int) -> int:
    """Delete a pool and its VMs (administrators); refused while a VM is taken. Returns how many VM deletes
    were queued."""
    user = _admin(actor)
    with transaction.atomic():
        pool = VMPool.objects.select_for_update().get(pk=pool.pk if isinstance(pool, VMPool) else pool)
        members = list(pool.members.select_related("vm").exclude(vm__status=VMStatus.DELETED))
        taken = [m.vm.name for m in members if m.taken_by_id is not None and m.vm.status not in GONE]
        if taken:
            raise Conflict(f"Cannot delete pool {pool.name}: {', '.join(taken)} taken. They must be returned "
                           "first.", taken=taken)
        queued = 0
        for member in members:
            if member.vm.status not in GONE:
                vm_delete(actor=user, via=via, vm=member.vm)
                queued += 1
        audit(actor=user, via=via, action="pool.delete", target=pool,
              message=f"Delete VM pool {pool.name} and its {queued} VM(s)")
        pool.delete()  # the memberships go with it; the VMs' delete jobs run after the commit
    return queued


def _may_take(user: User, pool: VMPool) -> bool:
    return pool_visible(user=user).filter(pk=pool.pk).exists()


def pool_take(*, actor: Actor, via: str, pool: VMPool | int | str) -> TakeResult:
    """Give the user a free running VM of the pool. Concurrent takers never get the same VM: free rows are
    locked with SKIP LOCKED, so each gets the next one. One VM per user and pool: asking again gives the
    one they hold."""
    user = require_user(actor, "Sign in to take a VM from a pool.")
    with transaction.atomic():
        key = pool.pk if isinstance(pool, VMPool) else pool
        found = (VMPool.objects.filter(pk=key).first() if isinstance(key, int) or str(key).isdigit()
                 else VMPool.objects.filter(name=str(key)).first())
        if found is None or not _may_take(user, found):
            raise NotFound(f"VM pool {str(getattr(pool, 'name', pool))[:40]!r} not found.")
        pool = found
        held = PoolMember.objects.filter(pool=pool, taken_by=user).exclude(vm__status__in=GONE).select_related(
            "vm").first()
        if held is not None:
            return TakeResult(held.vm, f"You already hold {held.vm.name} from pool {pool.name}.")
        member = (PoolMember.objects.select_for_update(skip_locked=True, of=("self",))
                  .filter(pool=pool, taken_by__isnull=True, vm__status=VMStatus.RUNNING)
                  .select_related("vm").order_by("vm__name").first())
        if member is None:
            audit(actor=user, via=via, action="pool.take", target=pool, outcome=AuditEvent.Outcome.DENIED,
                  message=f"No free VM in pool {pool.name}")
            live = pool.members.exclude(vm__status__in=GONE)
            if live.count() >= pool.max_size and not live.filter(taken_by__isnull=True).exists():
                # At its maximum with every VM held: nothing is being started, only a return frees one.
                raise Conflict(f"Pool {pool.name} has no free VM: all its VMs are taken ({pool.max_size}, its "
                               "maximum size). Try again once someone returns one.", pool=pool.name)
            raise Conflict(f"Pool {pool.name} has no free VM right now; more are being started. "
                           "Try again in a minute.", pool=pool.name)
        member.taken_by, member.taken_at = user, timezone.now()
        member.save(update_fields=["taken_by", "taken_at"])
        audit(actor=user, via=via, action="pool.take", target=member.vm,
              message=f"Take {member.vm.name} from pool {pool.name}", data={"pool": pool.name})
    return TakeResult(member.vm, f"{member.vm.name} is yours until you return it to pool {pool.name}.")


def pool_return(*, actor: Actor, via: str, vm: VM | int, pool: VMPool | None = None) -> TakeResult:
    """Give a taken VM back (its taker or an administrator). A stateless pool's VM is reset to its image
    (a vm.reset job: its disk changes are discarded) and started again; otherwise it is freed as it is."""
    user = require_user(actor, "Sign in to return a VM.")
    pk = vm.pk if isinstance(vm, VM) else vm
    with transaction.atomic():
        member = (PoolMember.objects.select_for_update(of=("self",)).select_related("pool__owner", "vm")
                  .filter(vm_id=pk).first())
        if (member is None or (member.taken_by_id != user.pk and not is_admin(user))
                or (pool is not None and member.pool_id != pool.pk)):
            raise NotFound(f"You hold no pool VM {pk}.")
        if member.taken_by_id is None:
            raise InvalidState(f"{member.vm.name} is not taken.", status="free")
        pool, the_vm = member.pool, member.vm
        note = ""
        if pool.stateless and the_vm.status not in GONE:
            # The pool's owner resets it: the VM is theirs (the taker only borrowed it).
            vm_reset(actor=pool.owner, via=via, vm=the_vm, start=True)
            note = " It is being reset to its image."
        member.taken_by, member.taken_at = None, None
        member.save(update_fields=["taken_by", "taken_at"])
        audit(actor=user, via=via, action="pool.return", target=the_vm,
              message=f"Return {the_vm.name} to pool {pool.name}", data={"pool": pool.name})
    return TakeResult(the_vm, f"Returned {the_vm.name} to pool {pool.name}.{note}")


# --- replenish ------------------------------------------------------------------------------------

def _next_names(pool: VMPool, count: int) -> list[str]:
    used = set(VM.objects.filter(owner=pool.owner, name__startswith=f"{pool.name}-")
               .exclude(status=VMStatus.DELETED).values_list("name", flat=True))
    names: list[str] = []
    n = 1
    while len(names) < count:
        name = f"{pool.name}-{n:02}"
        if name not in used:
            names.append(name)
        n += 1
    return names


def pool_replenish(*, pool: VMPool | int) -> list[str]:
    """Keep `prestarted` free VMs (made by vm_create as the pool's owner, named <pool>-NN) without ever going
    beyond `max_size`; start free ones found stopped; forget members whose VM is deleted. Returns the names
    of the VMs it created. Runs as the system (the monitor leader's housekeeping)."""
    created: list[str] = []
    with transaction.atomic():
        pool = VMPool.objects.select_for_update(of=("self",)).select_related("owner", "image", "flavor").get(
            pk=pool.pk if isinstance(pool, VMPool) else pool)
        PoolMember.objects.filter(pool=pool, vm__status=VMStatus.DELETED).delete()
        live = pool.members.exclude(vm__status__in=GONE).select_related("vm")
        # A free VM in error counts towards the maximum but not towards K: it cannot be handed out.
        free = [m for m in live if m.taken_by_id is None and m.vm.status != VMStatus.ERROR]
        for member in free:
            if member.vm.status == VMStatus.STOPPED:
                try:
                    with transaction.atomic():
                        vm_start(actor=pool.owner, via=Via.SYSTEM, vm=member.vm)
                except PortalError as exc:  # busy, or its host does not answer: the next pass tries again
                    log.warning("VM pool %s: could not start %s: %s", pool.name, member.vm.name, exc.message)
        wanted = min(pool.prestarted - len(free), pool.max_size - len(live))
        for name in _next_names(pool, max(wanted, 0)):
            try:
                with transaction.atomic():  # a savepoint: a VM that does not fit leaves nothing behind
                    result = vm_create(actor=pool.owner, via=Via.SYSTEM, name=name, image=pool.image,
                                       flavor=pool.flavor, vcpus=pool.vcpus, memory_mib=pool.memory_mib,
                                       disk_gib=pool.disk_gib, description=f"VM pool {pool.name}", start=True,
                                       clone="thin")
                    PoolMember.objects.create(pool=pool, vm=result.vm)
            except PortalError as exc:  # the owner's quota is full, or no host has room: the next pass tries again
                log.warning("VM pool %s: could not create %s: %s", pool.name, name, exc.message)
                break
            created.append(name)
        if created:
            audit(actor=None, via=Via.SYSTEM, action="pool.replenish", target=pool,
                  message=f"Pool {pool.name}: created {', '.join(created)}")
    return created


def pools_replenish_all() -> dict[str, object]:
    """The housekeeping chore: replenish every pool; a pool that cannot grow (quota, no host) is logged and
    the others still are."""
    done: dict[str, object] = {}
    for pool_id, name in VMPool.objects.values_list("pk", "name"):
        try:
            done[name] = pool_replenish(pool=pool_id)
        except PortalError as exc:
            log.warning("VM pool %s could not be replenished: %s", name, exc.message)
            done[name] = exc.message
    return done


# --- the grants registered with vms.access --------------------------------------------------------

def pool_vm_guard(actor: Actor, vm: VM, verb: str) -> str | None:
    """A taker may not delete a pool VM nor snapshot it, nor rename it, grow, add or change its disks (the
    owner's quota), change its NICs or move its lease: the next taker gets it as the pool made it (administrators and the pool's owner may)."""
    if actor is None or is_admin(actor) or getattr(actor, "pk", None) == vm.owner_id:
        return None
    member = PoolMember.objects.select_related("pool").filter(vm=vm).first()
    if member is None:
        return None
    if verb == "delete":
        return f"{vm.name} belongs to pool {member.pool.name}: return it instead of deleting it."
    if verb == "snapshot":
        return f"{vm.name} belongs to pool {member.pool.name}: pool VMs cannot be snapshotted."
    if verb == "update":
        return f"{vm.name} belongs to pool {member.pool.name}: pool VMs keep the name and description the pool gave."
    if verb == "grow_disk":
        return f"{vm.name} belongs to pool {member.pool.name}: its disk keeps the pool's size."
    if verb == "disks":
        return (f"{vm.name} belongs to pool {member.pool.name}: its disks stay as the pool made them (the pool's "
                "owner pays for them).")
    if verb == "nics":
        return f"{vm.name} belongs to pool {member.pool.name}: its network cards stay as the pool made them."
    if verb == "lease":
        return f"{vm.name} belongs to pool {member.pool.name}: pool VMs have no lease of yours; return it when done."
    return None
