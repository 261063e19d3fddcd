"""Every rule about VMs: authorization, validation, quota, state machine, auditing and jobs.

Record phase (here, one transaction): check, reserve, write the row in a transitional state,
create the Job and the audit event; the job is enqueued on commit. Act phase: vms.jobs handlers
call the gateway outside any long transaction and write the outcome in a short one.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import IntegrityError, transaction
from django.utils import timezone

from cluster.choices import HostStatus
from cluster.models import Host
from cluster.power import cluster_capacity_short
from cluster.scheduler import NoHostAvailable, VMRequest, schedule
from networks.models import Network
from networks.selectors import network_default_for, network_resolve
from networks.validation import random_mac, validate_mac
from portal.actors import Actor, require_user
from portal.audit import audit
from portal.choices import JobStatus
from portal.events import STAFF_GROUP, publish, team_group, user_group
from portal.exceptions import Conflict, InvalidState, NotFound, PermissionDenied, ValidationFailed
from portal.hypervisor import get_driver
from portal.jobs import job_create
from portal.models import AuditEvent, Job
from quotas.services import quota_reserve
from storage.domains import domain_host_ids  # storage domains (issue #11)
from storage.models import Image
from storage.selectors import image_list, image_visible
from storage.services import image_new_check, image_volume_name, pool_for_host, volume_plan

from . import lifecycle
from .access import check_action
from .choices import SnapshotStatus, VMStatus
from .lease_policy import lease_for_new_vm
from .models import VM, Flavor, Snapshot, VMDisk, VMNic
from .properties import NIC, check_boot_order, validate_properties
from .scheduling import networks_constraint
from .selectors import vm_snapshot_get, vm_visible
from .specs import build_spec
from .validation import (
    parse_id,
    validate_description,
    validate_size,
    validate_snapshot_name,
    validate_user_data,
    validate_vm_name,
)

SEED_TARGET = "vdz"  # the cloud-init seed's disk (vms.cloudinit finds it by label, not by name)
CLONE_THIN, CLONE_FULL = "thin", "full"
CLONE_MODES = (CLONE_THIN, CLONE_FULL)  # how a new VM's disk is made from its image
TEMPLATE_JOB = "vm.template"  # sealing a stopped VM's disk into a template (handler in vms.jobs)
RESET_JOB = "vm.reset"  # discarding a VM's disk changes: its thin clones made again from the image (vms.jobs)


@dataclass(frozen=True)
class ActionResult:
    """What an action did: the VM, the job that carries it out (None for a no-op) and a message."""

    vm: VM
    job: Job | None
    message: str


class SnapshotResult(NamedTuple):
    """What a snapshot operation did: the snapshot, the job that carries it out, and a message."""

    snapshot: Snapshot
    job: Job
    message: str


def vm_event(vm: VM) -> dict:
    return {
        "kind": "vm",
        "id": vm.pk,
        "uuid": str(vm.uuid),
        "name": vm.name,
        "status": vm.status,
        "status_label": VMStatus(vm.status).label,
        "power_state": vm.power_state,
        "last_error": vm.last_error,
    }


def _vm_groups(vm: VM) -> list[str]:
    """Who hears about a VM live: staff, its owner, its team."""
    groups = [STAFF_GROUP, user_group(vm.owner_id)]
    if vm.group_id:
        groups.append(team_group(vm.group_id))
    return groups


def vm_job_groups(target_id: str) -> list[str]:
    """Who hears live of the jobs on a VM, whoever started them (portal.jobs.register_job_audience)."""
    vm = VM.objects.filter(pk=int(target_id)).only("owner_id", "group_id").first() if target_id.isdigit() else None
    return _vm_groups(vm) if vm is not None else []


def vm_publish(vm: VM) -> None:
    publish(_vm_groups(vm), vm_event(vm))


def snapshots_publish(vm: VM) -> None:
    """Tell pages showing the VM that its snapshots changed (they fetch the panel again)."""
    publish(_vm_groups(vm), {"kind": "vm_snapshots", "id": vm.pk})


def vm_set_status(vm: VM, status: str, *, last_error: str | None = None, **fields: object) -> VM:
    """Write a new status (the only place VM.status changes) and publish it."""
    vm.status = status
    vm.status_changed_at = timezone.now()
    update = {"status": status, "status_changed_at": vm.status_changed_at, "updated_at": timezone.now(), **fields}
    if last_error is not None:
        vm.last_error = update["last_error"] = last_error
    for key, value in fields.items():
        setattr(vm, key, value)
    VM.objects.filter(pk=vm.pk).update(**update)
    vm_publish(vm)
    return vm


def _check_actor(actor: Actor) -> User:
    return require_user(actor, "Sign in to manage VMs.")


def _lock_visible(*, actor: Actor, vm: VM | int, confirmed_down_ok: bool = False) -> VM:
    """Re-read the VM under a row lock, through the visibility rule; refused while its host does not
    answer (see vm_require_host_reachable; `confirmed_down_ok` is the hook for force-off/delete on a
    host an administrator confirmed down)."""
    pk = vm.pk if isinstance(vm, VM) else vm
    # None is the system itself (the lease expiry pass, issue #14), which acts on every VM; doors always pass
    # the signed-in user (an anonymous visitor is refused here).
    if actor is not None:
        actor = _check_actor(actor)
        if not vm_visible(user=actor).filter(pk=pk).exists():
            raise NotFound(f"VM {pk} not found.")
    # Lock the bare row (FOR UPDATE cannot apply to DISTINCT or outer joins).
    locked = VM.objects.select_for_update().get(pk=pk)
    vm_require_host_reachable(locked, confirmed_down_ok=confirmed_down_ok)
    return locked


def vm_require_host_reachable(vm: VM, *, confirmed_down_ok: bool = False) -> None:
    """Refuse (Conflict, HTTP 409) any action on a VM whose host is not in HostStatus.REACHABLE: what
    runs there is unknown, and a job would only fail against it. Every record-phase entry point goes
    through `_lock_visible`, which calls this; other apps (consoles) call it before dialling the host.

    Hook for HA: with `confirmed_down_ok`, a host an administrator (or fencing) confirmed down
    (Host.confirmed_down_at) lets the action through; no entry point passes it yet."""
    host = Host.objects.only("name", "status", "confirmed_down_at").get(pk=vm.host_id)
    if host.status in HostStatus.REACHABLE:
        return
    if confirmed_down_ok and host.confirmed_down_at is not None:
        return
    raise Conflict(f"Host {host.name} is not responding; the VM's state is unknown. Try again when the host "
                   "is back, or ask an administrator.", host=host.name, host_status=host.status)


def _resolve_size(*, flavor: Flavor | str | None, vcpus: object, memory_mib: object, disk_gib: object,
                  image: Image | None, actor: User) -> tuple[Flavor | None, int, int, int]:
    if flavor is not None and not isinstance(flavor, Flavor):
        name = str(flavor).strip()
        qs = Flavor.objects.all() if actor.is_staff else Flavor.objects.filter(is_public=True)
        flavor = qs.filter(name=name).first()
        if flavor is None:
            known = ", ".join(qs.values_list("name", flat=True)) or "none"
            raise ValidationFailed(f"Unknown flavor {name[:40]!r} (known: {known}).", field="flavor")
    errors: dict[str, list[str]] = {}
    values = {}
    # Without a flavor, a template's sizes (the VM's it was sealed from) are the defaults.
    template = image if image is not None and image.kind == Image.Kind.TEMPLATE and flavor is None else None
    for field, explicit, from_flavor in (
        ("vcpus", vcpus, flavor.vcpus if flavor else template.default_vcpus if template else None),
        ("memory_mib", memory_mib, flavor.memory_mib if flavor else template.default_memory_mib if template else None),
        ("disk_gib", disk_gib, flavor.disk_gib if flavor else template.min_disk_gib if template else None),
    ):
        value = explicit if explicit not in (None, "") else from_flavor
        if value is None:
            errors[field] = ["Choose a flavor or give this size."]
            continue
        try:
            values[field] = validate_size(field, value)
        except ValidationFailed as exc:
            errors.update(exc.errors)
    if errors:
        raise ValidationFailed(errors)
    if image is not None and values["disk_gib"] < image.min_disk_gib:
        raise ValidationFailed(f"Image {image.name} needs a disk of at least {image.min_disk_gib} GiB.",
                               field="disk_gib")
    return flavor, values["vcpus"], values["memory_mib"], values["disk_gib"]


def _is_id(text: str) -> bool:
    """A row id typed as text: ASCII digits only ("²" is a digit to isdigit(), not to int())."""
    return parse_id(text) is not None


def _lock_image(image: Image) -> None:
    """Lock the image's row for the rest of the transaction (image_delete locks it too): a delete under
    way is waited for, and then its image is gone, which is said clearly."""
    if not Image.objects.select_for_update().filter(pk=image.pk).values_list("pk", flat=True):
        raise ValidationFailed(f"Image {image.name} no longer exists.", field="image")


def _resolve_image(*, actor: User, image: Image | str | int | None) -> Image:
    qs = image_visible(user=actor)
    if isinstance(image, Image):
        if not qs.filter(pk=image.pk).exists():
            raise ValidationFailed(f"Unknown image {image.name!r}.", field="image")
        return image
    if image in (None, ""):
        default = qs.filter(is_default=True).first()
        if default is None:
            raise ValidationFailed("Choose an image.", field="image")
        return default
    text = str(image).strip()
    found = qs.filter(pk=int(text)).first() if _is_id(text) else qs.filter(name=text).first()
    if found is None:
        known = ", ".join(qs.values_list("name", flat=True)) or "none"
        raise ValidationFailed(f"Unknown image {text[:60]!r} (known: {known}).", field="image")
    return found


def _resolve_group(*, actor: User, group: Group | str | None) -> Group | None:
    """A Group given as object or name (API, Slack); blank means a personal VM."""
    if group is None or isinstance(group, Group):
        return group
    text = str(group).strip()
    if not text:
        return None
    found = Group.objects.filter(name=text).first()
    if found is None:
        mine = ", ".join(actor.groups.order_by("name").values_list("name", flat=True)) or "none"
        raise ValidationFailed(f"Unknown group {text[:80]!r} (yours: {mine}).", field="group")
    return found


NetworkKey = Network | str | int


def _resolve_networks(*, actor: User, owner: User, networks: Iterable[NetworkKey] | None) -> list[Network]:
    """The networks of a new VM: as given (each one the actor may use), or the owner's default one;
    an empty list means no NIC at all."""
    if networks is None:
        default = network_default_for(user=owner)
        return [default] if default is not None else []
    if isinstance(networks, (str, Network)):
        networks = [networks]
    chosen: list[Network] = []
    for key in networks:
        if key in (None, ""):
            continue
        network = network_resolve(user=actor, key=key)
        if owner != actor and not network_resolve_ok(owner, network):
            raise ValidationFailed(f"{owner.get_username()} may not use the network {network.name}.",
                                   field="networks")
        chosen.append(network)
    if len(chosen) > settings.NICS_PER_VM:
        raise ValidationFailed(f"A VM has at most {settings.NICS_PER_VM} NICs.", field="networks")
    return chosen


def network_resolve_ok(user: User, network: Network) -> bool:
    try:
        network_resolve(user=user, key=network)
    except ValidationFailed:
        return False
    return True


def _new_mac() -> str:
    """A MAC no NIC of this portal has (52:54:00 + 24 random bits; retried on the rare collision)."""
    for _ in range(20):
        mac = random_mac()
        if not VMNic.objects.filter(mac=mac).exists():
            return mac
    raise Conflict("Could not find a free MAC address; try again.")


@dataclass(frozen=True)
class CreatePlan:
    """A validated VM creation (every rule checked but the record phase's): one VM, or many (vms.bulk)."""

    actor: User
    owner: User
    names: tuple[str, ...]
    description: str
    clone: str
    image: Image
    flavor: Flavor | None
    vcpus: int
    memory_mib: int
    disk_gib: int
    group: Group | None
    nets: tuple[Network, ...]
    user_data: str
    allowed_hosts: frozenset[int] | None
    allowed_reason: str
    storage_domain: str | None
    expires_at: datetime | None = None  # the VM's lease end (vms.leases; None: no lease)

    @property
    def whose(self) -> str:
        return "You already have" if self.owner == self.actor else f"{self.owner.get_username()} already has"


def vm_create_plan(*, actor: Actor, names: Iterable[str], image: Image | str | int | None = None,
                   flavor: Flavor | str | None = None, vcpus: object = None, memory_mib: object = None,
                   disk_gib: object = None, description: str = "", group: Group | str | None = None,
                   owner: User | None = None, networks: Iterable[NetworkKey] | None = None,
                   user_data: str = "", clone: str | None = None, storage_domain: str | None = None,
                   lease_days: object = None, expires_at: object = None) -> CreatePlan:
    """Every check of a create that needs no lock: who for, names, size, image, group, networks, lease
    (vm_create's and vms.bulk's one set of rules)."""
    actor = _check_actor(actor)
    owner = owner or actor
    if owner != actor:
        if not actor.is_staff:
            raise PermissionDenied("Only administrators create VMs for other users.")
        if not owner.is_active:
            raise ValidationFailed(f"{owner.get_username()} is inactive: VMs cannot be created for them.",
                                   field="owner")
    valid_names = tuple(validate_vm_name(name) for name in names)
    description = validate_description(description)
    clone = (clone or CLONE_THIN).strip().lower()
    if clone not in CLONE_MODES:
        raise ValidationFailed(f"Clone must be {' or '.join(CLONE_MODES)}: a thin overlay on the image or a full copy "
                               "of it.", field="clone")
    image = _resolve_image(actor=actor, image=image)
    if clone == CLONE_FULL and image.kind == Image.Kind.ISO:
        raise ValidationFailed(f"{image.name} is an ISO: a VM boots it as a CD-ROM, there is no disk to copy.",
                               field="clone")
    flavor, vcpus, memory_mib, disk_gib = _resolve_size(
        flavor=flavor, vcpus=vcpus, memory_mib=memory_mib, disk_gib=disk_gib, image=image, actor=actor)
    group = _resolve_group(actor=owner, group=group)
    if group is not None and not actor.is_staff and not actor.groups.filter(pk=group.pk).exists():
        raise PermissionDenied(f"You are not a member of the group {group.name}.")
    nets = _resolve_networks(actor=actor, owner=owner, networks=networks)
    user_data = validate_user_data(user_data)
    if user_data and not image.cloud_init:
        raise ValidationFailed(f"Image {image.name} does not take cloud-init, so it has no use for user-data.",
                               field="user_data")
    lease_end = lease_for_new_vm(actor=actor, group=group, lease_days=lease_days, expires_at=expires_at)
    allowed_hosts, allowed_reason = networks_constraint(nets)
    # --- storage domains (issue #11): `storage_domain` (a data domain's name) holds the disks; only hosts
    # that see it are eligible ---
    if storage_domain:
        domain_hosts, domain_reason = domain_host_ids(storage_domain, field="storage_domain")
        allowed_hosts = domain_hosts if allowed_hosts is None else allowed_hosts & domain_hosts
        allowed_reason = f"{allowed_reason} and {domain_reason}" if allowed_reason else domain_reason
    return CreatePlan(actor=actor, owner=owner, names=valid_names, description=description, clone=clone,
                      image=image, flavor=flavor, vcpus=vcpus, memory_mib=memory_mib, disk_gib=disk_gib,
                      group=group, nets=tuple(nets), user_data=user_data, allowed_hosts=allowed_hosts,
                      allowed_reason=allowed_reason, storage_domain=storage_domain, expires_at=lease_end)


def vm_create(*, actor: Actor, via: str, name: str, image: Image | str | int | None = None,
              flavor: Flavor | str | None = None, vcpus: object = None, memory_mib: object = None,
              disk_gib: object = None, description: str = "", group: Group | str | None = None, start: bool = True,
              owner: User | None = None, networks: Iterable[NetworkKey] | None = None,
              user_data: str = "", clone: str | None = None,
              storage_domain: str | None = None, lease_days: object = None,
              expires_at: object = None) -> ActionResult:
    """Validate, reserve quota under a row lock, write the VM as `creating` and queue the create job.

    `clone`: "thin" (the default) makes the disk a qcow2 overlay on the image's base volume (fast; the
    image is kept while such clones exist); "full" a standalone copy of it (slower, independent).
    Without a flavor or sizes, a template's own sizes are the defaults.

    `owner` (administrators only): create the VM for another user, on that user's (or team's) quota.
    `networks`: one NIC on each (None: the owner's default network, if any; []: no NIC). Images that
    take cloud-init get a NoCloud seed with the owner's SSH keys and `user_data`.
    `lease_days` (0: no lease) or `expires_at`: the VM's lease (vms.leases; None: the group's default).
    """
    plan = vm_create_plan(actor=actor, names=[name], image=image, flavor=flavor, vcpus=vcpus, memory_mib=memory_mib,
                          disk_gib=disk_gib, description=description, group=group, owner=owner, networks=networks,
                          user_data=user_data, clone=clone, storage_domain=storage_domain,
                          lease_days=lease_days, expires_at=expires_at)
    name = plan.names[0]
    try:
        with transaction.atomic():
            _lock_image(plan.image)  # first: an image_delete under way finishes, or waits for this VM's rows
            quota_reserve(user=plan.owner, group=plan.group, vcpus=plan.vcpus, memory_mib=plan.memory_mib,
                          disk_gib=plan.disk_gib)
            result = vm_create_record(plan, via=via, name=name, start=start)
    except IntegrityError:  # the unique (owner, name) constraint lost a race with a twin request
        raise ValidationFailed(f"{plan.whose} a VM named {name!r}.", field="name") from None
    except NoHostAvailable as exc:  # recorded after the rollback: power saving wakes a standby host
        capacity_short(reason=exc.message)
        raise
    return result


def vm_create_lock(plan: CreatePlan) -> None:
    """The first lock of a create's record phase (an image_delete under way finishes, or waits for it)."""
    _lock_image(plan.image)


def vm_create_record(plan: CreatePlan, *, via: str, name: str, start: bool = True,
                     parent: Job | None = None) -> ActionResult:
    """The record phase of one VM of `plan`, inside the caller's transaction, after its image lock and quota
    check: the name clash, placement, the rows (VM, disks, NICs), the vm.create job (a child of `parent`,
    when a batch's) and the audit event."""
    assert transaction.get_connection().in_atomic_block, "vm_create_record needs the caller's transaction"
    actor, owner, image = plan.actor, plan.owner, plan.image
    vcpus, memory_mib, disk_gib = plan.vcpus, plan.memory_mib, plan.disk_gib
    if VM.objects.filter(owner=owner, name=name).exclude(status=VMStatus.DELETED).exists():
        raise ValidationFailed(f"{plan.whose} a VM named {name!r}.", field="name")
    # Placement inside the record phase: the clusters' rows are locked, so concurrent creates see each
    # other's VMs and never overcommit a host (cluster.scheduler).
    placement = schedule(request=VMRequest(vcpus=vcpus, memory_mib=memory_mib, name=name,
                                           allowed_host_ids=plan.allowed_hosts, allowed_reason=plan.allowed_reason),
                         lock=True)
    host = placement.host
    vm = VM.objects.create(
        name=name, description=plan.description, owner=owner, group=plan.group, host=host, image=image,
        flavor=plan.flavor, vcpus=vcpus, memory_mib=memory_mib, disk_gib=disk_gib,
        status=VMStatus.CREATING, created_via=via, user_data=plan.user_data, expires_at=plan.expires_at,
    )
    vm.domain_name = f"{_domain_prefix()}-{vm.uuid.hex[:12]}"
    VM.objects.filter(pk=vm.pk).update(domain_name=vm.domain_name)
    pool = pool_for_host(host, plan.storage_domain)
    # An ISO install: a blank root disk, the ISO in the CD-ROM drive, CD first at boot.
    installs = image.kind == Image.Kind.ISO
    full = plan.clone == CLONE_FULL
    root = volume_plan(pool=pool, name=f"{vm.domain_name}-disk0.qcow2", capacity_gib=disk_gib,
                       backing_image=None if (full or installs) else image, copy_of=image if full else None)
    if installs:
        VM.objects.filter(pk=vm.pk).update(cdrom_drive=True, cdrom=image)
        vm.cdrom_drive, vm.cdrom = True, image
    VMDisk.objects.create(vm=vm, volume=root, target="vda", bus="virtio")
    if image.cloud_init:
        seed = volume_plan(pool=pool, name=f"{vm.domain_name}-cidata.iso", capacity_gib=0,
                           backing_image=None, fmt="raw")
        VMDisk.objects.create(vm=vm, volume=seed, target=SEED_TARGET, bus="virtio", readonly=True)
    # Locked: a network being deleted or reshaped waits for this VM's NICs, or this create waits for it.
    list(Network.objects.select_for_update().filter(pk__in=[n.pk for n in plan.nets]))
    for network in plan.nets:
        VMNic.objects.create(vm=vm, network=network, mac=_new_mac(), status=VMNic.Status.ATTACHED)
    job = job_create(kind="vm.create", actor=actor, via=via, target=vm,
                     params={"start": start, "placement": placement.explanation}, max_attempts=2, parent=parent)
    _log_placement(job, placement.explanation)
    for_whom = "" if owner == actor else f" for {owner.get_username()}"
    audit(actor=actor, via=via, action="vm.create", target=vm, job=job,
          outcome=AuditEvent.Outcome.REQUESTED,
          message=f"Create {name}{for_whom}: {vcpus} vCPU, {memory_mib} MiB, {disk_gib} GiB, "
                  f"image {image.name}" + (" (ISO in the CD-ROM drive, blank disk)" if installs else "")
                  + (" (full copy)" if full else ""),
          data={"vcpus": vcpus, "memory_mib": memory_mib, "disk_gib": disk_gib, "image": image.name,
                "clone": plan.clone, "owner": owner.get_username(), "networks": [n.name for n in plan.nets],
                "expires_at": plan.expires_at.isoformat() if plan.expires_at else None})
    vm_publish(vm)
    return ActionResult(vm, job, f"Creating {name}.")


def vm_reset(*, actor: Actor, via: str, vm: VM | int, start: bool = True) -> ActionResult:
    """Discard every change made to the VM's disks since it was created: power it off, make each writable
    thin clone again as an empty overlay on its image, and (`start`) power it on again. Owner and
    administrators only (the pools app resets a stateless pool's VM on return). VMs with snapshots or
    without a thin-clone disk are refused: there is nothing pristine to go back to."""
    user = _check_actor(actor)
    with transaction.atomic():
        vm = _lock_visible(actor=user, vm=vm)
        if vm.owner_id != user.pk and not user.is_staff:
            raise PermissionDenied(f"Only the owner of {vm.name} or an administrator may reset it.")
        if vm.status not in lifecycle.SNAPSHOT_STATES | {VMStatus.ERROR}:
            state = vm.get_status_display().lower()
            raise InvalidState(f"Cannot reset {vm.name}: it is {state}.", status=vm.status)
        busy_job = _active_job(vm)
        if busy_job is not None:
            raise InvalidState(f"Cannot reset {vm.name}: a {busy_job.kind.split('.', 1)[-1].replace('.', ' ')} job is "
                               f"{busy_job.get_status_display().lower()}. Try again when it has finished.",
                               status=vm.status)
        if vm.snapshots.exists():
            raise InvalidState(f"Cannot reset {vm.name}: it has snapshots (they live in the disk a reset discards); "
                               "delete them first.", status=vm.status)
        if not vm.disks.filter(readonly=False, volume__backing_image__isnull=False).exists():
            raise InvalidState(f"Cannot reset {vm.name}: no disk of it is a thin clone of an image.", status=vm.status)
        job = job_create(kind=RESET_JOB, actor=user, via=via, target=vm, params={"previous": vm.status, "start": start})
        vm_set_status(vm, VMStatus.REBOOTING)
        audit(actor=user, via=via, action="vm.reset", target=vm, job=job, outcome=AuditEvent.Outcome.REQUESTED,
              message=f"Reset {vm.name} to its image (disk changes discarded)")
    return ActionResult(vm, job, f"Resetting {vm.name}.")


def capacity_short(*, reason: str) -> None:
    """No host had room: each cluster with a host on standby hears of it (cluster.power wakes one)."""
    for cluster_id in Host.objects.filter(status=HostStatus.STANDBY).values_list("cluster_id", flat=True).distinct():
        cluster_capacity_short(cluster_id=cluster_id, reason=reason)


def _log_placement(job: Job, explanation: dict) -> None:
    """The job's first log line: where the scheduler put the VM, and why."""
    job.log += f"{timezone.now():%H:%M:%S} Placed on {explanation.get('reason') or explanation.get('chosen')}\n"
    Job.objects.filter(pk=job.pk).update(log=job.log)


def _domain_prefix() -> str:
    return settings.DOMAIN_PREFIX


# --- power actions and delete (the rules are the table in vms.lifecycle) -------------------------

def _power_action(action: str, *, actor: Actor, via: str, vm: VM | int) -> ActionResult:
    transition = lifecycle.POWER_ACTIONS[action]
    refused: InvalidState | None = None
    with transaction.atomic():
        vm = _lock_visible(actor=actor, vm=vm)
        state = vm.get_status_display().lower()
        if vm.status in transition.noop:
            audit(actor=actor, via=via, action=f"vm.{action}", target=vm,
                  message=f"No-op: {vm.name} is already {state}")
            return ActionResult(vm, None, f"{vm.name} is already {state}.")
        busy = _snapshot_busy(vm)
        nic_busy = vm.nics.exclude(status=VMNic.Status.ATTACHED).first()
        disk_busy = vm.disks.exclude(status=VMDisk.Status.ATTACHED).first()  # issue #11: a disk change under way
        if vm.status not in transition.allowed:
            refused = InvalidState(transition.refusal(name=vm.name, status=vm.status, transitional=vm.is_transitional),
                                   status=vm.status)
        elif busy is not None and transition.waits_for_snapshots:
            refused = InvalidState(f"Cannot {action.replace('_', ' ')} {vm.name}: {_busy_text(busy)}. "
                                   "Try again when it has finished.", status=vm.status)
        elif nic_busy is not None and transition.waits_for_snapshots:
            refused = InvalidState(f"Cannot {action.replace('_', ' ')} {vm.name}: NIC {nic_busy.mac} is still "
                                   f"{nic_busy.get_status_display().lower()}. Try again when it has finished.",
                                   status=vm.status)
        elif disk_busy is not None and transition.waits_for_snapshots:
            refused = InvalidState(f"Cannot {action.replace('_', ' ')} {vm.name}: disk {disk_busy.target} is still "
                                   f"{disk_busy.get_status_display().lower()}. Try again when it has finished.",
                                   status=vm.status)
        elif action == "start" and (exclusive := _exclusive_job(vm)) is not None:  # issue #11 review: backups
            refused = InvalidState(_exclusive_text(vm, "start", exclusive), status=vm.status)
        elif (sealing := _template_job(vm)) is not None:
            refused = InvalidState(f"Cannot {action.replace('_', ' ')} {vm.name}: template "
                                   f"{sealing.params.get('name')} is being made from its disk. "
                                   "Try again when it has finished.", status=vm.status)
        else:
            job = job_create(kind=transition.job_kind, actor=actor, via=via, target=vm,
                             params={"previous": vm.status})
            if transition.transitional:
                vm_set_status(vm, transition.transitional)
            audit(actor=actor, via=via, action=f"vm.{action}", target=vm, job=job,
                  outcome=AuditEvent.Outcome.REQUESTED, message=f"{transition.doing} {vm.name}")
    if refused is not None:
        audit(actor=actor, via=via, action=f"vm.{action}", target=vm, outcome=AuditEvent.Outcome.DENIED,
              message=refused.message)
        raise refused
    return ActionResult(vm, job, f"{transition.doing} {vm.name}.")


def vm_start(*, actor: Actor, via: str, vm: VM | int) -> ActionResult:
    """Power on; starting a running VM is a no-op."""
    return _power_action("start", actor=actor, via=via, vm=vm)


def vm_stop(*, actor: Actor, via: str, vm: VM | int) -> ActionResult:
    """ACPI shutdown: press the power button and wait for the guest to power off."""
    return _power_action("stop", actor=actor, via=via, vm=vm)


def vm_force_off(*, actor: Actor, via: str, vm: VM | int) -> ActionResult:
    """Power cut."""
    return _power_action("force_off", actor=actor, via=via, vm=vm)


def vm_reboot(*, actor: Actor, via: str, vm: VM | int) -> ActionResult:
    """Ask the guest to restart."""
    return _power_action("reboot", actor=actor, via=via, vm=vm)


def vm_pause(*, actor: Actor, via: str, vm: VM | int) -> ActionResult:
    """Freeze the VM in memory; pausing a paused VM is a no-op."""
    return _power_action("pause", actor=actor, via=via, vm=vm)


def vm_resume(*, actor: Actor, via: str, vm: VM | int) -> ActionResult:
    """Continue a paused VM; resuming a running VM is a no-op."""
    return _power_action("resume", actor=actor, via=via, vm=vm)


# The power actions by name, in the lifecycle table's order (the API's enum, the CLI's choices).
VM_ACTIONS = tuple(lifecycle.POWER_ACTIONS)


def vm_action(*, actor: Actor, via: str, vm: VM | int, action: str) -> ActionResult:
    """Dispatch a power action by name (for adapters that take the action as input)."""
    if action not in lifecycle.POWER_ACTIONS:
        raise ValidationFailed(f"Unknown action {action[:30]!r} (one of: {', '.join(VM_ACTIONS)}).",
                               field="action")
    return _power_action(action, actor=actor, via=via, vm=vm)


def vm_delete(*, actor: Actor, via: str, vm: VM | int, confirm_name: str | None = None) -> ActionResult:
    """Power off, undefine, remove every disk: the job leaves nothing behind in libvirt."""
    transition = lifecycle.DELETE
    with transaction.atomic():
        vm = _lock_visible(actor=actor, vm=vm)
        check_action(actor=actor, vm=vm, verb="delete")  # registered guards (vms.access: pools)
        if confirm_name is not None and confirm_name.strip() != vm.name:
            raise ValidationFailed(f"Type the VM's name ({vm.name}) to confirm deletion.", field="confirm_name")
        if vm.status in transition.noop:
            return ActionResult(vm, None, f"{vm.name} is already being deleted.")
        if vm.status not in transition.allowed:
            refusal = transition.refusal(name=vm.name, status=vm.status, transitional=True)
            raise InvalidState(f"{refusal} Try again when the current action has finished.", status=vm.status)
        busy = _snapshot_busy(vm)
        if busy is not None:
            raise InvalidState(f"Cannot delete {vm.name}: {_busy_text(busy)}. "
                               "Try again when it has finished.", status=vm.status)
        nic_busy = vm.nics.exclude(status=VMNic.Status.ATTACHED).first()
        if nic_busy is not None:
            raise InvalidState(f"Cannot delete {vm.name}: NIC {nic_busy.mac} is still "
                               f"{nic_busy.get_status_display().lower()}. Try again when it has finished.",
                               status=vm.status)
        disk_busy = vm.disks.exclude(status=VMDisk.Status.ATTACHED).first()  # issue #11
        if disk_busy is not None:
            raise InvalidState(f"Cannot delete {vm.name}: disk {disk_busy.target} is still "
                               f"{disk_busy.get_status_display().lower()}. Try again when it has finished.",
                               status=vm.status)
        exclusive = _exclusive_job(vm)  # issue #11 review: a backup or restore reads or rewrites its disks
        if exclusive is not None:
            raise InvalidState(_exclusive_text(vm, "delete", exclusive), status=vm.status)
        sealing = _template_job(vm)
        if sealing is not None:
            raise InvalidState(f"Cannot delete {vm.name}: template {sealing.params.get('name')} is being made from "
                               "its disk. Try again when it has finished.", status=vm.status)
        job = job_create(kind=transition.job_kind, actor=actor, via=via, target=vm, params={"previous": vm.status},
                         max_attempts=3)
        vm_set_status(vm, transition.transitional or VMStatus.DELETING)
        audit(actor=actor, via=via, action="vm.delete", target=vm, job=job,
              outcome=AuditEvent.Outcome.REQUESTED, message=f"Delete {vm.name}")
    return ActionResult(vm, job, f"Deleting {vm.name}.")


def vm_update(*, actor: Actor, via: str, vm: VM | int, name: str | None = None,
              description: str | None = None) -> VM:
    """Rename or re-describe a VM; the domain's title and description follow."""
    changes = {}
    with transaction.atomic():
        vm = _lock_visible(actor=actor, vm=vm)
        if (name is not None and name != vm.name) or (description is not None and description != vm.description):
            check_action(actor=actor, vm=vm, verb="update")  # registered guards (vms.access: pools)
        if name is not None:
            new_name = validate_vm_name(name)
            if new_name != vm.name:
                if VM.objects.filter(owner=vm.owner, name=new_name).exclude(status=VMStatus.DELETED).exists():
                    raise ValidationFailed(f"You already have a VM named {new_name!r}.", field="name")
                changes["name"] = (vm.name, new_name)
                vm.name = new_name
        if description is not None:
            description = validate_description(description)
            if description != vm.description:
                changes["description"] = (vm.description, description)
                vm.description = description
        if not changes:
            return vm
        try:
            with transaction.atomic():
                vm.save(update_fields=["name", "description", "updated_at"])
        except IntegrityError:
            raise ValidationFailed(f"You already have a VM named {vm.name!r}.", field="name") from None
        audit(actor=actor, via=via, action="vm.update", target=vm,
              message="; ".join(f"{k}: {old!r} → {new!r}" for k, (old, new) in changes.items()))
        vm_publish(vm)
    if vm.status not in (VMStatus.CREATING, VMStatus.DELETING):
        try:
            get_driver(vm.host.uri).set_title(str(vm.uuid), title=vm.name, description=vm.description)
        except NotFound:
            pass
    return vm


# --- disk --------------------------------------------------------------------------------------------

def vm_grow_disk(*, actor: Actor, via: str, vm: VM | int, disk_gib: object) -> ActionResult:
    """Grow the VM's disk (never shrink), charged to its owner's (or team's) disk quota.

    A running guest sees the new size at once (its partitions and filesystems are its own business).
    """
    with transaction.atomic():
        vm = _lock_visible(actor=actor, vm=vm)
        new_size = validate_size("disk_gib", disk_gib)
        if new_size == vm.disk_gib:
            return ActionResult(vm, None, f"The disk of {vm.name} is already {new_size} GiB.")
        if new_size < vm.disk_gib:
            raise ValidationFailed(f"A disk can only grow: {vm.name}'s is {vm.disk_gib} GiB, so give more than that.",
                                   field="disk_gib")
        check_action(actor=actor, vm=vm, verb="grow_disk")  # registered guards (vms.access: pools)
        _refuse_while_busy(vm, "grow the disk of")
        root = vm_root_disk(vm)  # the boot disk (data disks grow through vms.disks.vm_disk_grow)
        if root is None:
            raise Conflict(f"{vm.name} has no boot disk to grow.")
        old_size = vm.disk_gib
        quota_reserve(user=vm.owner, group=vm.group, vcpus=0, memory_mib=0, disk_gib=new_size - old_size, vms=0)
        if not get_driver(vm.host.uri).capabilities().live_disk_resize:
            raise Conflict(f"The host of {vm.name} ({vm.host.name}) cannot grow disks.")
        VM.objects.filter(pk=vm.pk).update(disk_gib=new_size, updated_at=timezone.now())
        vm.disk_gib = new_size
        job = job_create(kind="vm.disk.grow", actor=actor, via=via, target=vm,
                         params={"previous_gib": old_size, "disk_gib": new_size, "disk_id": root.pk,
                                 "target": root.target})
        audit(actor=actor, via=via, action="vm.disk.grow", target=vm, job=job, outcome=AuditEvent.Outcome.REQUESTED,
              message=f"Grow the disk of {vm.name} from {old_size} to {new_size} GiB",
              data={"previous_gib": old_size, "disk_gib": new_size})
        vm_publish(vm)
    return ActionResult(vm, job, f"Growing the disk of {vm.name} to {new_size} GiB.")

# --- templates ---------------------------------------------------------------------------------
# A stopped VM's disk is sealed into a template: a flattened copy becomes a new base image with the
# VM's sizes as defaults. While the copy is made the VM cannot start or be deleted (it would change or
# remove the disk being read); it stays as it was.

def vm_root_disk(vm: VM) -> VMDisk | None:
    """The disk the VM boots from: its one writable disk (vda for VMs the portal made; an adopted VM's
    may be called anything: sda, hda), or, for an adopted VM with several, the first in its domain's
    order (adoption records them in that order), the one `<boot dev='hd'/>` boots."""
    return vm.disks.select_related("volume__pool__host").filter(readonly=False).order_by("pk").first()


def _template_job(vm: VM) -> Job | None:
    """The queued or running job that seals the VM's disk into a template, if any."""
    return Job.objects.filter(target_type="vm", target_id=str(vm.pk), kind=TEMPLATE_JOB,
                              status__in=JobStatus.ACTIVE).first()


def vm_template_create(*, actor: Actor, via: str, vm: VM | int, name: str, title: str = "",
                       visibility: str = Image.Visibility.PRIVATE, groups: Iterable[Group | str] = (),
                       description: str = "", library: bool = False) -> Job:
    """Seal a stopped VM into a template (a job): its root disk copied, flattened, into a new base image
    with the VM's sizes as defaults and its image's boot settings.

    The VM's owner or an administrator may; the VM must be stopped with nothing else under way. The
    template belongs to the actor and counts against their disk quota; `library` (administrators):
    it joins the library instead (no owner, not charged). Its name must not be taken by any image.
    """
    user = _check_actor(actor)
    description = validate_description(description)
    if library and not user.is_staff:
        raise PermissionDenied("Only administrators add templates to the library.")
    owner = None if library else user
    groups = list(groups)
    with transaction.atomic():
        vm = _lock_visible(actor=user, vm=vm)
        if vm.owner_id != user.pk and not user.is_staff:
            raise PermissionDenied(f"Only the owner of {vm.name} or an administrator may make a template of it.")
        if vm.status not in lifecycle.TEMPLATE_STATES:
            state = vm.get_status_display().lower()
            raise InvalidState(f"Cannot make a template of {vm.name}: it is {state}. Stop it first "
                               "(a template is sealed from a stopped VM).", status=vm.status)
        _refuse_while_busy(vm, "make a template of")
        root = vm_root_disk(vm)
        if root is None:
            raise Conflict(f"{vm.name} has no root disk to make a template of.")
        size_gib = root.volume.capacity_gib  # that disk only: an adopted VM's other disks are not copied
        title, chosen = image_new_check(actor=user, owner=owner, name=name, title=title,
                                        visibility=visibility, groups=groups)
        other = Job.objects.filter(kind=TEMPLATE_JOB, status__in=JobStatus.ACTIVE, params__name=name).first()
        if other is not None:
            raise ValidationFailed(f"A template named {name!r} is being made already; choose another name.",
                                   field="name")
        if owner is not None:
            quota_reserve(user=owner, vcpus=0, memory_mib=0, disk_gib=size_gib, vms=0)
        params = {"name": name, "title": title, "description": description, "visibility": visibility,
                  "groups": [g.pk for g in chosen], "owner_id": owner.pk if owner else None,
                  "disk_id": root.pk, "disk_gib": size_gib,
                  # The copy goes to the portal's pool of the host (image_from_volume), whatever pool the disk is in.
                  "pool_id": pool_for_host(vm.host).pk,
                  # Its own volume name: a retry finds its copy, and no other image's volume is touched.
                  "volume_name": image_volume_name(f"{name}-{secrets.token_hex(4)}")}
        job = job_create(kind=TEMPLATE_JOB, actor=user, via=via, target=vm, params=params)
        where = "the library" if owner is None else f"{user.get_username()}'s templates"
        audit(actor=user, via=via, action=TEMPLATE_JOB, target=vm, job=job, outcome=AuditEvent.Outcome.REQUESTED,
              message=f"Make template {name} of {vm.name} (disk {root.target}, {size_gib} GiB) in {where}",
              data={"template": name, "visibility": visibility, "library": owner is None, "disk": root.target,
                    "disk_gib": size_gib})
        vm_publish(vm)
    return job


# --- snapshots ----------------------------------------------------------------------------------
# Internal snapshots inside the VM's qcow2 disks: with the RAM when the VM runs (revert resumes the
# guest where it was), disks only when it is off. One snapshot operation per VM at a time.

SNAPSHOT_DESCRIPTION_MAX = 500  # Snapshot.description's max_length
_BUSY_TEXT: dict[str, str] = {
    SnapshotStatus.CREATING: "snapshot {name} is being taken",
    SnapshotStatus.REVERTING: "it is being reverted to snapshot {name}",
    SnapshotStatus.DELETING: "snapshot {name} is being deleted",
}


def _snapshot_busy(vm: VM) -> Snapshot | None:
    return vm.snapshots.filter(status__in=SnapshotStatus.BUSY).first()


def _busy_text(snapshot: Snapshot) -> str:
    return _BUSY_TEXT[snapshot.status].format(name=snapshot.name)


def _active_job(vm: VM) -> Job | None:
    """A queued or running job on the VM (pause and resume have no transitional state to show it). An external
    plugin's job never holds the VM: its work is outside the portal (portal.jobs.services)."""
    return Job.objects.filter(target_type="vm", target_id=str(vm.pk), status__in=JobStatus.ACTIVE,
                              external=False).first()


def _refuse_while_busy(vm: VM, verb: str) -> None:
    """Snapshot and disk operations wait for whatever else is under way on the VM."""
    if vm.status not in lifecycle.SNAPSHOT_STATES:
        state = vm.get_status_display().lower()
        reason = f"is busy ({state})" if vm.is_transitional else f"is {state}"
        raise InvalidState(f"Cannot {verb} {vm.name}: it {reason}.", status=vm.status)
    busy = _snapshot_busy(vm)
    if busy is not None:
        raise InvalidState(f"Cannot {verb} {vm.name}: {_busy_text(busy)}. Try again when it has finished.",
                           status=vm.status)
    job = _active_job(vm)
    if job is not None:
        raise InvalidState(f"Cannot {verb} {vm.name}: a {job.kind.split('.', 1)[-1].replace('.', ' ')} job is "
                           f"{job.get_status_display().lower()}. Try again when it has finished.", status=vm.status)


def _snapshot_ready_vm(*, actor: Actor, vm: VM | int, verb: str) -> VM:
    """Lock the VM and check that a snapshot operation may start now."""
    vm = _lock_visible(actor=actor, vm=vm)
    _refuse_while_busy(vm, verb)
    return vm


def snapshot_create(*, actor: Actor, via: str, vm: VM | int, name: str | None = None,
                    description: str = "") -> SnapshotResult:
    """Take a snapshot of the VM (with its RAM when it runs) in a job."""
    name = validate_snapshot_name(name) if name not in (None, "") else None
    description = validate_description(description, limit=SNAPSHOT_DESCRIPTION_MAX)
    user = _check_actor(actor)
    with transaction.atomic():
        vm = _snapshot_ready_vm(actor=user, vm=vm, verb="snapshot")
        check_action(actor=user, vm=vm, verb="snapshot")  # registered guards (vms.access: pools)
        # issue #11: internal snapshots live inside qcow2 files: every writable disk must be one.
        raw = vm.disks.filter(readonly=False).exclude(volume__format="qcow2").select_related("volume").first()
        if raw is not None:
            raise Conflict(f"Cannot snapshot {vm.name}: disk {raw.target} is {raw.volume.format}, and internal "
                           "snapshots need qcow2 on every writable disk.")
        count = vm.snapshots.count()
        if count >= settings.SNAPSHOTS_PER_VM:
            raise InvalidState(f"{vm.name} already has {count} snapshots (at most {settings.SNAPSHOTS_PER_VM}): "
                               "delete one first.", status=vm.status)
        if name is None:
            name = timezone.localtime().strftime("snap-%Y%m%d-%H%M%S")
        if vm.snapshots.filter(name=name).exists():
            raise ValidationFailed(f"{vm.name} already has a snapshot named {name!r}.", field="name")
        estimate = snapshot_space_reserve(vm)  # QuotaExceeded when the disk quota cannot take it
        try:
            with transaction.atomic():
                snapshot = Snapshot.objects.create(vm=vm, name=name, description=description, created_by=user,
                                                   created_via=via, vm_state=vm.status, size_bytes=estimate)
        except IntegrityError:
            raise ValidationFailed(f"{vm.name} already has a snapshot named {name!r}.", field="name") from None
        with_ram = " with its memory" if vm.status in VMStatus.ACTIVE else ""
        job = job_create(kind="vm.snapshot.create", actor=actor, via=via, target=vm,
                         params={"snapshot_id": snapshot.pk, "snapshot": name})
        audit(actor=actor, via=via, action="vm.snapshot.create", target=vm, job=job,
              outcome=AuditEvent.Outcome.REQUESTED, message=f"Snapshot {vm.name}{with_ram} as {name}",
              data={"snapshot": name})
        snapshots_publish(vm)
    return SnapshotResult(snapshot, job, f"Taking snapshot {name} of {vm.name}.")


def snapshot_revert(*, actor: Actor, via: str, vm: VM | int, snapshot: Snapshot | int | str) -> SnapshotResult:
    """Return the VM to a snapshot: disks (and RAM, when it has it) as they were; later changes are lost."""
    with transaction.atomic():
        vm = _snapshot_ready_vm(actor=actor, vm=vm, verb="revert")
        found = vm_snapshot_get(vm=vm, key=snapshot)
        job = _snapshot_job(actor=actor, via=via, vm=vm, snapshot=found, op="revert",
                            status=SnapshotStatus.REVERTING, message=f"Revert {vm.name} to snapshot {found.name}")
    return SnapshotResult(found, job, f"Reverting {vm.name} to snapshot {found.name}.")


def snapshot_delete(*, actor: Actor, via: str, vm: VM | int, snapshot: Snapshot | int | str) -> SnapshotResult:
    """Delete a snapshot (its data inside the disks too); the VM keeps running as it is."""
    with transaction.atomic():
        vm = _lock_visible(actor=actor, vm=vm)
        if vm.status in (VMStatus.DELETING, VMStatus.DELETED):
            raise InvalidState(f"{vm.name} is being deleted with its snapshots.", status=vm.status)
        found = vm_snapshot_get(vm=vm, key=snapshot)
        busy = _snapshot_busy(vm)
        if busy is not None:
            raise InvalidState(f"Cannot delete snapshot {found.name}: {_busy_text(busy)}. "
                               "Try again when it has finished.", status=vm.status)
        if vm.is_transitional:
            raise InvalidState(f"Cannot delete snapshot {found.name}: {vm.name} is busy "
                               f"({vm.get_status_display().lower()}).", status=vm.status)
        job = _snapshot_job(actor=actor, via=via, vm=vm, snapshot=found, op="delete",
                            status=SnapshotStatus.DELETING, message=f"Delete snapshot {found.name} of {vm.name}")
    return SnapshotResult(found, job, f"Deleting snapshot {found.name} of {vm.name}.")


def _snapshot_job(*, actor: Actor, via: str, vm: VM, snapshot: Snapshot, op: str, status: str, message: str) -> Job:
    """Record phase of a revert or delete: the snapshot turns busy, the job is queued, audited, told."""
    job = job_create(kind=f"vm.snapshot.{op}", actor=actor, via=via, target=vm,
                     params={"snapshot_id": snapshot.pk, "snapshot": snapshot.name, "previous": vm.status})
    Snapshot.objects.filter(pk=snapshot.pk).update(status=status)
    snapshot.status = status
    audit(actor=actor, via=via, action=f"vm.snapshot.{op}", target=vm, job=job,
          outcome=AuditEvent.Outcome.REQUESTED, message=message, data={"snapshot": snapshot.name})
    snapshots_publish(vm)
    return job


# --- NICs -------------------------------------------------------------------------------------------
# Hot-plug: a NIC added to a running VM appears in the guest at once (and in its definition); removed,
# the guest is asked to let go of it (ACPI hot-unplug). Stopped VMs just change their definition.

NIC_STATES = (VMStatus.RUNNING, VMStatus.STOPPED, VMStatus.PAUSED, VMStatus.ERROR)


def nics_publish(vm: VM) -> None:
    """Tell pages showing the VM that its NICs changed (they fetch the panel again)."""
    publish(_vm_groups(vm), {"kind": "vm_nics", "id": vm.pk})


def _nic_ready_vm(*, actor: Actor, vm: VM | int, verb: str) -> VM:
    vm = _lock_visible(actor=actor, vm=vm)
    check_action(actor=actor, vm=vm, verb="nics")  # registered guards (vms.access: pools)
    if vm.status not in NIC_STATES:
        state = vm.get_status_display().lower()
        raise InvalidState(f"Cannot {verb} {vm.name}: it is {state}.", status=vm.status)
    busy = vm.nics.exclude(status=VMNic.Status.ATTACHED).first()
    if busy is not None:
        raise InvalidState(f"Cannot {verb} {vm.name}: NIC {busy.mac} is still {busy.get_status_display().lower()}."
                           " Try again when it has finished.", status=vm.status)
    job = _active_job(vm)
    if job is not None:
        raise InvalidState(f"Cannot {verb} {vm.name}: a {job.kind.split('.', 1)[-1].replace('.', ' ')} job is "
                           f"{job.get_status_display().lower()}. Try again when it has finished.", status=vm.status)
    return vm


def vm_nic_add(*, actor: Actor, via: str, vm: VM | int, network: NetworkKey, model: str = VMNic.Model.VIRTIO,
               mac: str | None = None) -> tuple[VMNic, Job, str]:
    """Add a NIC on a network the actor may use (hot-plugged when the VM runs)."""
    user = _check_actor(actor)
    net = network_resolve(user=user, key=network, field="network")
    if model not in VMNic.Model.values:
        raise ValidationFailed(f"NIC model must be one of: {', '.join(VMNic.Model.values)}.", field="model")
    wanted_mac = validate_mac(mac) if mac not in (None, "") else None
    with transaction.atomic():
        vm = _nic_ready_vm(actor=user, vm=vm, verb="add a NIC to")
        if vm.nics.count() >= settings.NICS_PER_VM:
            raise InvalidState(f"{vm.name} already has {settings.NICS_PER_VM} NICs (the most a VM may have).",
                               status=vm.status)
        list(Network.objects.select_for_update().filter(pk=net.pk))  # no delete or reshape meanwhile
        if not net.placements.filter(host=vm.host).exists():
            raise Conflict(f"The network {net.name} is not available on {vm.name}'s host; "
                           "ask an administrator to add it there.")
        if wanted_mac and VMNic.objects.filter(mac=wanted_mac).exists():
            raise ValidationFailed(f"The MAC {wanted_mac} is already used by another NIC.", field="mac")
        try:
            with transaction.atomic():
                nic = VMNic.objects.create(vm=vm, network=net, mac=wanted_mac or _new_mac(), model=model,
                                           status=VMNic.Status.ATTACHING)
        except IntegrityError:
            raise ValidationFailed(f"The MAC {wanted_mac} is already used by another NIC.", field="mac") from None
        live = " (hot-plug)" if vm.status in VMStatus.ACTIVE else ""
        job = job_create(kind="vm.nic.add", actor=actor, via=via, target=vm,
                         params={"nic_id": nic.pk, "mac": nic.mac, "network": net.name})
        audit(actor=actor, via=via, action="vm.nic.add", target=vm, job=job, outcome=AuditEvent.Outcome.REQUESTED,
              message=f"Add a {model} NIC {nic.mac} on {net.name} to {vm.name}{live}",
              data={"mac": nic.mac, "network": net.name, "model": model})
        nics_publish(vm)
    return nic, job, f"Adding a NIC on {net.name} to {vm.name}."


def vm_nic_remove(*, actor: Actor, via: str, vm: VM | int, nic: VMNic | int | str) -> tuple[VMNic, Job, str]:
    """Remove a NIC (by id or MAC); a running guest is asked to release it (hot-unplug)."""
    with transaction.atomic():
        vm = _nic_ready_vm(actor=actor, vm=vm, verb="remove a NIC from")
        found = _nic_of(vm, nic)
        job = job_create(kind="vm.nic.remove", actor=actor, via=via, target=vm,
                         params={"nic_id": found.pk, "mac": found.mac, "network": found.network.name})
        VMNic.objects.filter(pk=found.pk).update(status=VMNic.Status.DETACHING)
        found.status = VMNic.Status.DETACHING
        audit(actor=actor, via=via, action="vm.nic.remove", target=vm, job=job,
              outcome=AuditEvent.Outcome.REQUESTED,
              message=f"Remove NIC {found.mac} ({found.network.name}) from {vm.name}",
              data={"mac": found.mac, "network": found.network.name})
        nics_publish(vm)
    return found, job, f"Removing NIC {found.mac} from {vm.name}."


def _nic_of(vm: VM, key: VMNic | int | str) -> VMNic:
    qs = vm.nics.select_related("network")
    if isinstance(key, VMNic):
        found = qs.filter(pk=key.pk).first()
    else:
        text = str(key).strip().lower()
        pk = parse_id(text)
        found = qs.filter(pk=pk).first() if pk is not None else qs.filter(mac=text.replace("-", ":")).first()
    if found is None:
        raise NotFound(f"{vm.name} has no NIC {str(key)[:40]}.")
    return found


# --- CD-ROM -----------------------------------------------------------------------------------------
# One IDE drive (vms.specs.CDROM_TARGET) per VM. Media changes live on a running VM and in the
# definition of a stopped one; the drive itself is added only while the VM is stopped (IDE does not
# hot-plug). While the drive exists the VM boots from CD first, then its disk: ejecting the ISO after
# an install makes it boot from the disk.

def cdrom_publish(vm: VM) -> None:
    """Tell pages showing the VM that its CD-ROM changed (they fetch the panel again)."""
    publish(_vm_groups(vm), {"kind": "vm_cdrom", "id": vm.pk})


def _resolve_iso(*, actor: User, image: Image | str | int) -> Image:
    """An ISO image the actor may use, by object, name or id."""
    qs = image_list(user=actor)
    key = image.pk if isinstance(image, Image) else str(image).strip()
    if key in ("", None):
        raise ValidationFailed("Choose an ISO image.", field="image")
    text = str(key)
    found = qs.filter(pk=int(text)).first() if _is_id(text) else qs.filter(name=text).first()
    if found is None:
        known = ", ".join(qs.filter(kind=Image.Kind.ISO).values_list("name", flat=True)) or "none"
        raise ValidationFailed(f"Unknown ISO image {text[:60]!r} (yours to use: {known}).", field="image")
    if found.kind != Image.Kind.ISO:
        raise ValidationFailed(f"{found.name} is a {found.get_kind_display().lower()}, not an ISO: only ISO "
                               "images go in a CD-ROM drive.", field="image")
    return found


def _media_ready_vm(*, actor: Actor, vm: VM | int, verb: str) -> VM:
    """Lock the VM and check that its CD-ROM may change now (the lifecycle's MEDIA_STATES, nothing
    else under way)."""
    vm = _lock_visible(actor=actor, vm=vm)
    if vm.status not in lifecycle.MEDIA_STATES:
        state = vm.get_status_display().lower()
        reason = lifecycle.MEDIA_WHY_NOT.get(vm.status) or (f"is busy ({state})" if vm.is_transitional
                                                            else f"is {state}")
        raise InvalidState(f"Cannot {verb} {vm.name}: it {reason}.", status=vm.status)
    busy = _snapshot_busy(vm)
    if busy is not None:
        raise InvalidState(f"Cannot {verb} {vm.name}: {_busy_text(busy)}. Try again when it has finished.",
                           status=vm.status)
    job = _active_job(vm)
    if job is not None:
        raise InvalidState(f"Cannot {verb} {vm.name}: a {job.kind.split('.', 1)[-1].replace('.', ' ')} job is "
                           f"{job.get_status_display().lower()}. Try again when it has finished.", status=vm.status)
    return vm


def _media_job(*, actor: Actor, via: str, vm: VM, kind: str, media: Image | None, message: str,
               data: dict) -> Job:
    """Record phase of a media change: the row holds the new media (and drive), the job makes libvirt
    follow; its failure puts the previous media back."""
    previous = {"previous_cdrom_id": vm.cdrom_id, "previous_drive": vm.cdrom_drive}
    VM.objects.filter(pk=vm.pk).update(cdrom_drive=True, cdrom=media, updated_at=timezone.now())
    add_drive = not vm.cdrom_drive
    vm.cdrom_drive, vm.cdrom = True, media
    job = job_create(kind=kind, actor=actor, via=via, target=vm,
                     params={"image_id": media.pk if media else None, "image": media.name if media else "",
                             "add_drive": add_drive, **previous})
    audit(actor=actor, via=via, action=kind, target=vm, job=job, outcome=AuditEvent.Outcome.REQUESTED,
          message=message, data=data)
    cdrom_publish(vm)
    return job


def vm_cdrom_insert(*, actor: Actor, via: str, vm: VM | int, image: Image | str | int) -> ActionResult:
    """Put an ISO the actor may use into the VM's CD-ROM drive (replacing what is in it): live on a
    running VM; a stopped VM without a drive gets one (it boots from CD first from then on)."""
    user = _check_actor(actor)
    iso = _resolve_iso(actor=user, image=image)
    with transaction.atomic():
        _lock_image(iso)  # before the VM's row, in the order image_delete takes them
        vm = _media_ready_vm(actor=user, vm=vm, verb="insert a CD into")
        running = vm.status in VMStatus.ACTIVE
        if not vm.cdrom_drive and running:
            raise InvalidState(f"{vm.name} has no CD-ROM drive, and one cannot be added while it runs (IDE drives "
                               "are not hot-pluggable): stop it, then insert the ISO (that adds the drive).",
                               status=vm.status)
        if vm.cdrom_id == iso.pk:
            return ActionResult(vm, None, f"{iso.name} is already in the CD-ROM drive of {vm.name}.")
        if running and not get_driver(vm.host.uri).capabilities().live_media_change:
            raise Conflict(f"The host of {vm.name} ({vm.host.name}) cannot change media in a running VM; "
                           "stop it and insert the ISO again.")
        replaced = f" (replacing {vm.cdrom.name})" if vm.cdrom is not None else ""
        adds = "" if vm.cdrom_drive else (
            " (adds a CD-ROM drive to its definition; its boot order stays its own)" if vm.adopted_at is not None
            else " (adds a CD-ROM drive; the VM boots from CD first)")
        job = _media_job(actor=user, via=via, vm=vm, kind="vm.cdrom.insert", media=iso,
                         message=f"Insert {iso.name} into the CD-ROM drive of {vm.name}{replaced}{adds}",
                         data={"image": iso.name, "add_drive": not vm.cdrom_drive})
    return ActionResult(vm, job, f"Inserting {iso.name} into {vm.name}.")


def vm_cdrom_eject(*, actor: Actor, via: str, vm: VM | int) -> ActionResult:
    """Empty the VM's CD-ROM drive (a locked tray is forced open): from then on it boots from its disk."""
    user = _check_actor(actor)
    with transaction.atomic():
        vm = _media_ready_vm(actor=user, vm=vm, verb="eject the CD of")
        if not vm.cdrom_drive:
            raise InvalidState(f"{vm.name} has no CD-ROM drive.", status=vm.status)
        if vm.cdrom is None:
            if vm.adopted_at is not None:  # media that is not the portal's may be in it: not ours to eject
                return ActionResult(vm, None, f"No portal ISO is in the CD-ROM drive of {vm.name} (media of its "
                                              "own, if any, is left as it is).")
            return ActionResult(vm, None, f"The CD-ROM drive of {vm.name} is already empty.")
        if vm.status in VMStatus.ACTIVE and not get_driver(vm.host.uri).capabilities().live_media_change:
            raise Conflict(f"The host of {vm.name} ({vm.host.name}) cannot change media in a running VM; "
                           "stop it and eject again.")
        name = vm.cdrom.name
        job = _media_job(actor=user, via=via, vm=vm, kind="vm.cdrom.eject", media=None,
                         message=f"Eject {name} from {vm.name}", data={"image": name})
    return ActionResult(vm, job, f"Ejecting {name} from {vm.name}.")


# --- NIC properties (issue #11) ------------------------------------------------------------------
# A NIC's model and its device properties (vms.properties: the boot order) are written into the VM's
# definition at once; QEMU takes them when the VM next starts (a running guest keeps its NIC as it is).

def vm_nic_update(*, actor: Actor, via: str, vm: VM | int, nic: VMNic | int | str, model: str | None = None,
                  properties: Mapping[str, object] | None = None) -> tuple[VMNic, Job | None, str]:
    """Change a NIC's model and/or device properties (validated by vms.properties; a boot order unique
    among the VM's devices). Applies at the VM's next start; the message says so. No job: the definition
    is written in the same transaction (a failure leaves the record as it was)."""
    user = _check_actor(actor)
    if model not in (None, "") and model not in VMNic.Model.values:
        raise ValidationFailed(f"NIC model must be one of: {', '.join(VMNic.Model.values)}.", field="model")
    with transaction.atomic():
        vm = _nic_ready_vm(actor=user, vm=vm, verb="change a NIC of")
        found = _nic_of(vm, nic)
        if vm.adopted_at is not None:
            raise Conflict(f"{vm.name} was adopted: its definition is its own, so the portal does not change its "
                           "NICs' model or properties.")
        new_props = validate_properties(device=NIC, properties=properties, actor=user, current=found.properties or {})
        check_boot_order(vm=vm, properties=new_props, nic_id=found.pk)
        new_model = model or found.model
        if new_model == found.model and new_props == (found.properties or {}):
            return found, None, f"NIC {found.mac} of {vm.name} is already like that."
        VMNic.objects.filter(pk=found.pk).update(model=new_model, properties=new_props)
        found.model, found.properties = new_model, new_props
        driver = get_driver(vm.host.uri)
        driver.define(build_spec(vm, domain_type=vm.domain_type
                                 or driver.resolve_domain_type(vm.host.effective_domain_type)))
        when = "at its next start" if vm.status in VMStatus.ACTIVE else "when it starts"
        audit(actor=user, via=via, action="vm.nic.update", target=vm, outcome=AuditEvent.Outcome.SUCCEEDED,
              message=f"Change NIC {found.mac} of {vm.name}: model {new_model}, properties {new_props or 'none'}",
              data={"mac": found.mac, "model": new_model, "properties": new_props})
        nics_publish(vm)
    return found, None, f"Changed NIC {found.mac} of {vm.name}; it applies {when}."


# --- snapshot space (issue #11) ------------------------------------------------------------------
# A snapshot holds space in the VM's disks and counts against the owner's (or team's) disk quota
# (vms.selectors.vm_quota_usage adds every snapshot's size_bytes). Each snapshot is charged what it
# adds: the disks' files' space after it is taken less what the VM's other snapshots are charged
# already (the data an earlier snapshot pinned is not counted again). Before one is taken, an estimate
# is reserved: the VM's memory when it runs (the RAM state) plus what its disks have allocated beyond
# the other snapshots' charges (the data the snapshot pins). The row carries the estimate while it is
# taken, so concurrent snapshots see each other; the job then stores what was measured
# (LibvirtDriver.snapshot_space, less the other snapshots' charges: vms.jobs.snapshot_measured_size).

from django.db.models import Sum  # noqa: E402  (self-contained block)

from portal import units  # noqa: E402
from portal.exceptions import PortalError, QuotaExceeded  # noqa: E402


def snapshot_space_estimate(vm: VM) -> int:
    """Bytes a new snapshot of `vm` may add: its memory when it runs, plus its writable disks' allocation
    as libvirt reports it (each disk's full size when the host cannot say) less what the VM's snapshots
    are charged already (the data they pin is counted once)."""
    memory = vm.memory_mib * 1024**2 if vm.status in VMStatus.ACTIVE else 0
    driver = get_driver(vm.host.uri)
    allocated = 0
    for disk in vm.disks.select_related("volume__pool").filter(readonly=False):
        volume = disk.volume
        try:
            allocated += driver.volume_info(pool=volume.pool.name, name=volume.name).allocation_bytes
        except PortalError:
            allocated += volume.capacity_gib * 1024**3  # the most it can hold
    return memory + max(0, allocated - snapshots_charged(vm))


def snapshots_charged(vm: VM, *, exclude: Snapshot | None = None) -> int:
    """Bytes the VM's snapshots (but `exclude`) are charged."""
    qs = Snapshot.objects.filter(vm=vm)
    if exclude is not None:
        qs = qs.exclude(pk=exclude.pk)
    return int(qs.aggregate(n=Sum("size_bytes"))["n"] or 0)


def snapshot_space_reserve(vm: VM) -> int:
    """Check that the disk quota of the VM's owner (or team) can take a new snapshot's estimate (whole GiB,
    as the usage counts); returns the estimate in bytes. Inside the transaction that writes the row."""
    estimate = snapshot_space_estimate(vm)
    if estimate:
        try:
            quota_reserve(user=vm.owner, group=vm.group, vcpus=0, memory_mib=0, disk_gib=-(-estimate // 1024**3),
                          vms=0)
        except QuotaExceeded as exc:
            what = "its memory and its disks' data" if vm.status in VMStatus.ACTIVE else "its disks' data"
            exc.message = (f"{exc.message}. A snapshot of {vm.name} counts against the disk quota ({what}, "
                           f"up to {units.filesize(estimate)}): delete a snapshot or ask for more disk quota.")
            exc.args = (exc.message,)
            raise
    return estimate
# --- backups (issue #11): what the backups app needs of the VM rules -----------------------------

def vm_lock_for_action(*, actor: Actor, vm: VM | int) -> VM:
    """The VM under a row lock, through the visibility rule, its host answering (for other apps' actions)."""
    return _lock_visible(actor=actor, vm=vm)


def vm_refuse_while_busy(vm: VM, verb: str) -> None:
    """Refuse (InvalidState) while the VM is transitional, a snapshot operation or another job runs on it."""
    _refuse_while_busy(vm, verb)


# --- jobs that own the VM's disks (issue #11 review, finding 1) ------------------------------------
# Other apps' jobs that read or rewrite a VM's disks outside a VM status (the backups app registers
# backup.create and backup.restore): while one is queued or running on the VM it is not started (QEMU
# would open a disk being copied or replaced) nor deleted. Disk changes, snapshots and templates wait
# for any job on the VM already (_refuse_while_busy).

_EXCLUSIVE_JOB_KINDS: set[str] = set()


def register_exclusive_job_kinds(*kinds: str) -> None:
    """Job kinds (target: a VM) during which that VM may not be started or deleted."""
    _EXCLUSIVE_JOB_KINDS.update(kinds)


def _exclusive_job(vm: VM) -> Job | None:
    if not _EXCLUSIVE_JOB_KINDS:
        return None
    return (Job.objects.filter(target_type="vm", target_id=str(vm.pk), status__in=JobStatus.ACTIVE,
                               kind__in=sorted(_EXCLUSIVE_JOB_KINDS)).order_by("created_at").first())


def _exclusive_text(vm: VM, verb: str, job: Job) -> str:
    from portal.jobs.labels import job_label

    return (f"Cannot {verb} {vm.name}: a \"{job_label(job.kind)}\" job is {job.get_status_display().lower()} "
            "on its disks. Try again when it has finished.")
