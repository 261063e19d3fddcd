"""Adopting domains made outside the portal, and releasing VMs back to the host.

Adoption reads the domain's definition from libvirt (sizes, disks, NICs, power state), checks that
everything it needs stays manageable (every disk a volume of a libvirt pool on the host, every NIC
on a portal network of that host), charges the new owner's quota (or records the administrator's
reason for overriding it), writes the VM's rows, and then writes the portal's metadata into the
running domain and its persistent definition: the guest is not restarted and notices nothing.

Release is the inverse: the portal's metadata leaves the domain, the VM's rows go (its quota charge
with them), and the domain and its disks stay on the host exactly as they are; the next reconcile
(and this service, at once) lists it as a foreign domain again.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from cluster.models import ForeignDomain, Host
from cluster.services import foreign_domain_forget, foreign_domain_record
from networks.models import Network
from portal.actors import Actor, require_user
from portal.audit import audit
from portal.exceptions import (
    Conflict,
    DomainNotFound,
    NotFound,
    PermissionDenied,
    PortalError,
    QuotaExceeded,
    ValidationFailed,
)
from portal.hypervisor import DiskInfo, DomainDefinition, DomainInfo, VolumeInfo, get_driver
from portal.models import AuditEvent
from quotas.services import quota_reserve
from storage.models import Image, StoragePool, Volume
from storage.services import pool_register, volume_adopt, volume_forget, volume_owner

from .choices import SnapshotStatus, VMStatus
from .lifecycle import status_for
from .models import VM, VMDisk, VMNic
from .services import _active_job, _resolve_group, vm_publish
from .specs import domain_metadata
from .validation import NAME_RE, validate_description, validate_vm_name

GIB = 1024**3
REASON_MAX = 500
# Removable media: never adopted as disks. One CD-ROM drive is recorded as the VM's drive (its media a portal
# image or left alone); other drives and floppies stay in the domain as they are.
_MEDIA_DEVICES = {"cdrom", "floppy"}


@dataclass(frozen=True)
class AdoptedDisk:
    """A disk of the domain as it will be recorded: a volume of a pool on the host."""

    target: str
    bus: str
    readonly: bool
    path: str
    pool: str
    volume: str
    format: str
    capacity_bytes: int
    pool_known: bool  # the portal lists the pool already (else it is registered on adoption)
    backing_image: Image | None = None

    @property
    def capacity_gib(self) -> int:
        return max(1, -(-self.capacity_bytes // GIB))


@dataclass(frozen=True)
class AdoptedCdrom:
    """The domain's CD-ROM drive the portal records (the VM's drive: insert and eject change its media
    only). `image`: the portal image whose file is in it (recorded as the VM's media, so it cannot be
    deleted under the domain); None with a `path`: media that is not the portal's, left in the drive."""

    target: str
    bus: str
    path: str | None
    image: Image | None = None


@dataclass(frozen=True)
class AdoptedNic:
    mac: str
    model: str
    network: Network


@dataclass(frozen=True)
class AdoptionPlan:
    """What adopting a domain would record, what it leaves alone, and what stands in its way."""

    host: Host
    definition: DomainDefinition
    name: str
    disks: tuple[AdoptedDisk, ...]
    nics: tuple[AdoptedNic, ...]
    cdrom: AdoptedCdrom | None = None
    left_alone: tuple[str, ...] = ()
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def disk_gib(self) -> int:
        return sum(d.capacity_gib for d in self.disks if not d.readonly)

    @property
    def delete_note(self) -> str:
        """What Delete will do to this VM once it is the portal's (doors show it before confirming)."""
        volumes = ", ".join(f"{d.volume} (pool {d.pool})" for d in self.disks) or "none"
        return (f"Once adopted, {self.name} is managed like any portal VM: Delete powers it off, undefines the "
                f"domain and deletes its volumes ({volumes}). Release instead makes the portal forget it and "
                "leaves the domain and its disks as they are.")


def _require_admin(actor: Actor, message: str) -> User:
    user = require_user(actor, message)
    if not user.is_staff:
        raise PermissionDenied(message)
    return user


def _suggest_name(definition: DomainDefinition) -> str:
    """A valid VM name from the domain's title or name (lowercase, hyphens for anything else)."""
    for candidate in (definition.title, definition.name):
        text = re.sub(r"[^a-z0-9-]+", "-", (candidate or "").lower()).strip("-")[:63].strip("-")
        if text and NAME_RE.fullmatch(text):
            return text
    return f"adopted-{definition.uuid[:8]}"


def _network_of(host: Host, libvirt_name: str | None) -> Network | None:
    prefix = f"{settings.DOMAIN_PREFIX}-net-"
    if not libvirt_name or not libvirt_name.startswith(prefix):
        return None
    return Network.objects.filter(name=libvirt_name[len(prefix):], placements__host=host).first()


def foreign_domain_get(*, host: Host, key: str) -> ForeignDomain:
    """A foreign domain of `host` by UUID or domain name."""
    text = str(key).strip()
    fd = ForeignDomain.objects.filter(host=host, uuid=text).first() or \
        ForeignDomain.objects.filter(host=host, name=text).first()
    if fd is None:
        raise NotFound(f"No foreign domain {text[:100]!r} on host {host.name} (run a reconcile to refresh the list).")
    return fd


def foreign_domain_list() -> QuerySet[ForeignDomain]:
    """Every foreign domain of every host (administrators: the doors check that)."""
    return ForeignDomain.objects.select_related("host").order_by("host__name", "name")


def foreign_domain_lookup(*, key: object) -> ForeignDomain:
    """A foreign domain by its numeric id or its UUID."""
    text = str(key).strip()
    qs = foreign_domain_list()
    fd = qs.filter(pk=int(text)).first() if (text.isascii() and text.isdigit() and len(text) <= 18) else qs.filter(uuid=text.lower()).first()
    if fd is None:
        raise NotFound(f"Foreign domain {text[:60]!r} not found.")
    return fd


def adoption_plan(*, actor: Actor, host: Host, uuid: str) -> AdoptionPlan:
    """Read the domain from libvirt and say what adopting it would record (administrators only).

    Nothing changes anywhere; problems are listed, not raised, so a door can show them all at once.
    """
    _require_admin(actor, "Only administrators adopt domains.")
    driver = get_driver(host.uri)
    try:
        definition = driver.domain_definition(uuid)
    except DomainNotFound:
        raise NotFound(f"The domain {uuid[:40]} no longer exists on host {host.name}.") from None
    problems: list[str] = []
    left_alone: list[str] = []
    label = definition.name
    meta = definition.metadata or {}
    if meta.get("instance") and meta.get("instance") != settings.INSTANCE_ID:
        problems.append(f"{label} belongs to another portal instance ({meta['instance']}); adopt it there.")
    existing = VM.objects.filter(uuid=definition.uuid).first() if _is_uuid(definition.uuid) else None
    if existing is not None:
        if existing.status == VMStatus.DELETED:
            problems.append(f"A deleted portal VM (#{existing.pk}, {existing.name}) had this domain's UUID; "
                            "the portal cannot record a second VM with it.")
        else:
            problems.append(f"{label} is already the portal VM {existing.name} (owner "
                            f"{existing.owner.get_username()}).")
    if not definition.persistent:
        problems.append(f"{label} is a transient domain (no persistent definition): the portal could not start it "
                        "again once it stops. Define it first (virsh dumpxml, then virsh define).")

    others = _other_domains_disks(host=host, uuid=definition.uuid)
    cdrom, media_problems, media_notes = _plan_cdrom(host, definition)
    problems.extend(media_problems)
    left_alone.extend(media_notes)
    disks: list[AdoptedDisk] = []
    for disk in definition.disks:
        where = f"disk {disk.target or '?'}"
        if disk.device in _MEDIA_DEVICES:
            continue
        if disk.source_type in ("network", "block", "dir"):
            source = disk.path or "a network source"
            problems.append(f"{where} ({disk.source_type}: {source}) is not a volume of a libvirt storage pool: "
                            "only disks in pools can be adopted.")
            continue
        info: VolumeInfo | None
        try:
            if disk.source_type == "volume" and disk.pool and disk.volume:
                info = driver.volume_info(pool=disk.pool, name=disk.volume)
            elif disk.path:
                info = driver.volume_for_path(disk.path)
            else:
                problems.append(f"{where} has no source.")
                continue
        except PortalError as exc:
            problems.append(f"{where}: its volume cannot be read ({exc.message}).")
            continue
        if info is None:
            problems.append(f"{where} ({disk.path}) is outside every storage pool of host {host.name}: move it "
                            "into a pool (or define a pool over its directory) first.")
            continue
        pool = StoragePool.objects.filter(host=host, name=info.pool).first()
        if pool is not None:
            owner = volume_owner(pool=pool, name=info.name, path=info.path)
            if owner:
                problems.append(f"{where} ({info.path}) is {owner} of the portal.")
                continue
        shared = others.get(info.path)
        if shared:
            problems.append(f"{where} ({info.path}) is also a disk of domain {shared}: shared disks cannot be "
                            "adopted (deleting the VM would delete it).")
            continue
        backing = Image.objects.filter(path=info.backing_path).first() if info.backing_path else None
        disks.append(AdoptedDisk(
            target=disk.target, bus=disk.bus or "virtio", readonly=disk.readonly, path=info.path, pool=info.pool,
            volume=info.name, format=disk.format or info.format or "raw", capacity_bytes=info.capacity_bytes,
            pool_known=pool is not None, backing_image=backing))

    nics: list[AdoptedNic] = []
    for nic in definition.nics:
        network = _network_of(host, nic.network) if nic.type == "network" else None
        if network is None:
            on = (f"libvirt network {nic.network}" if nic.type == "network" else
                  f"{nic.type} interface" + (f" on bridge {nic.bridge}" if nic.bridge else ""))
            problems.append(f"NIC {nic.mac} ({on}) is not on a portal network of host {host.name}: the portal "
                            "would lose it when it writes the domain again. Move it to a portal network first.")
            continue
        if VMNic.objects.filter(mac=nic.mac).exists():
            problems.append(f"NIC {nic.mac}: a portal VM has a NIC with this MAC already.")
            continue
        nics.append(AdoptedNic(mac=nic.mac, model=nic.model or "virtio", network=network))
    if definition.kernel_boot:
        left_alone.append("direct kernel boot: the domain keeps its kernel and initrd (the portal never rewrites "
                          "an adopted domain's definition, except to re-create it if it disappears)")
    return AdoptionPlan(host=host, definition=definition, name=_suggest_name(definition), disks=tuple(disks),
                        nics=tuple(nics), cdrom=cdrom, left_alone=tuple(left_alone), problems=tuple(problems))


def _media_image(host: Host, disk: DiskInfo) -> Image | None:
    """The portal image whose file is the media in a CD-ROM or floppy drive, if any."""
    if disk.source_type == "volume" and disk.pool and disk.volume:
        return Image.objects.filter(pool__host=host, pool__name=disk.pool, volume_name=disk.volume).first()
    if disk.path:
        return Image.objects.filter(pool__host=host, path=disk.path).first()
    return None


def _plan_cdrom(host: Host, definition: DomainDefinition) -> tuple[AdoptedCdrom | None, list[str], list[str]]:
    """The CD-ROM drive the VM records (the first one, or the one holding a portal image), the problems
    (portal images in drives the portal would not record: they could be deleted under the domain) and
    what is left alone (other drives, floppies)."""
    media = [(d, _media_image(host, d)) for d in definition.disks if d.device in _MEDIA_DEVICES]
    cdroms = [(d, image) for d, image in media if d.device == "cdrom"]
    chosen = next(((d, i) for d, i in cdroms if i is not None), cdroms[0] if cdroms else None)
    problems: list[str] = []
    notes: list[str] = []
    for disk, image in media:
        what = disk.path or (f"{disk.pool}/{disk.volume}" if disk.volume else "empty")
        if chosen is not None and disk is chosen[0]:
            held = (f"holds the portal image {image.name}, recorded as its media" if image is not None else
                    "empty" if what == "empty" else f"holds {what}, not a portal image: left in it until an ISO "
                    "is inserted")
            notes.append(f"cdrom {disk.target} ({disk.bus or 'ide'}): recorded as the VM's CD-ROM drive ({held}); "
                         "insert and eject change only its media")
        elif image is not None:
            problems.append(f"{disk.device} {disk.target} holds the portal image {image.name}: only one drive's media "
                            "is recorded, and an unrecorded image could be deleted under the domain. Eject it first.")
        else:
            notes.append(f"{disk.device} {disk.target} ({what}): stays in the domain as it is, not managed by the "
                         "portal")
    if chosen is None:
        return None, problems, notes
    disk, image = chosen
    return AdoptedCdrom(target=disk.target or "hdc", bus=disk.bus or "ide", path=disk.path, image=image), problems, notes


def _is_uuid(text: str) -> bool:
    try:
        uuidlib.UUID(text)
    except ValueError:
        return False
    return True


def _other_domains_disks(*, host: Host, uuid: str) -> dict[str, str]:
    """Disk path -> domain name, for every other domain of the host (a disk two domains share is refused)."""
    driver = get_driver(host.uri)
    out: dict[str, str] = {}
    for info in driver.list_domains():
        if info.uuid == uuid:
            continue
        try:
            other = driver.domain_definition(info.uuid)
        except DomainNotFound:
            continue
        for disk in other.disks:
            if disk.path and disk.device not in _MEDIA_DEVICES:
                out.setdefault(disk.path, other.name)
    return out


def _resolve_owner(owner: User | str) -> User:
    if isinstance(owner, User):
        user: User | None = owner
    else:
        user = User.objects.filter(username=str(owner).strip()).first()
        if user is None:
            raise ValidationFailed(f"No user {str(owner)[:150]!r}.", field="owner")
    assert user is not None
    if not user.is_active:
        raise ValidationFailed(f"{user.get_username()} is inactive: a VM cannot be given to them.", field="owner")
    return user


def _validate_reason(reason: object, field_name: str) -> str:
    try:
        return validate_description(reason, limit=REASON_MAX).strip()
    except ValidationFailed as exc:
        raise ValidationFailed(exc.message.replace("Description", "The reason"), field=field_name) from None


def vm_adopt(*, actor: Actor, via: str, host: Host, uuid: str, owner: User | str, group: Group | str | None = None,
             name: str | None = None, override_reason: str = "") -> VM:
    """Make a domain created outside the portal a portal VM of `owner`, without restarting it.

    Administrators only. The owner's (or the group's) quota is checked under its row lock unless
    `override_reason` is given: the reason, and by how much the quota is exceeded, go into the
    audit event. The domain's disks become Volume rows (no backing image), its NICs VMNic rows, and
    the portal's metadata is written into the running domain and its definition (no restart).
    """
    admin = _require_admin(actor, "Only administrators adopt domains.")
    owner = _resolve_owner(owner)
    group = _resolve_group(actor=owner, group=group)
    reason = _validate_reason(override_reason, "override_reason")
    plan = adoption_plan(actor=admin, host=host, uuid=uuid)
    definition = plan.definition
    if not plan.ok:
        message = f"Cannot adopt {definition.name}: " + " ".join(plan.problems)
        audit(actor=admin, via=via, action="vm.adopt", target_type="domain", target_id=definition.uuid,
              target_name=definition.name, outcome=AuditEvent.Outcome.DENIED, message=message)
        raise Conflict(message, problems=list(plan.problems))
    vm_name = validate_vm_name(name) if name not in (None, "") else plan.name
    description = definition.description if _valid_description(definition.description) else ""
    vcpus, memory_mib, disk_gib = definition.vcpus, definition.memory_mib, plan.disk_gib
    # Pools the portal does not list yet are registered first (a libvirt read; no lock held).
    pools = {d.pool: StoragePool.objects.filter(host=host, name=d.pool).first() for d in plan.disks}
    for pool_name, pool in list(pools.items()):
        if pool is None:
            pools[pool_name] = pool_register(actor=admin, via=via, host=host, name=pool_name)
    whose = f"{owner.get_username()} already has"
    exceeded: QuotaExceeded | None = None
    try:
        with transaction.atomic():
            try:
                with transaction.atomic():
                    quota_reserve(user=owner, group=group, vcpus=vcpus, memory_mib=memory_mib, disk_gib=disk_gib)
            except QuotaExceeded as exc:
                if not reason:
                    raise
                exceeded = exc
            if VM.objects.filter(owner=owner, name=vm_name).exclude(status=VMStatus.DELETED).exists():
                raise ValidationFailed(f"{whose} a VM named {vm_name!r}; give the adopted VM another name.",
                                       field="name")
            if VM.objects.filter(uuid=uuidlib.UUID(definition.uuid)).exists():
                raise Conflict(f"{definition.name} was adopted in the meantime.")
            vm = VM.objects.create(
                uuid=uuidlib.UUID(definition.uuid), name=vm_name, description=description, owner=owner, group=group,
                host=host, image=None, flavor=None, vcpus=vcpus, memory_mib=memory_mib, disk_gib=disk_gib,
                status=status_for(definition.state), power_state=definition.state, domain_name=definition.name,
                domain_type=definition.domain_type[:8], created_via=via, adopted_at=timezone.now(),
                observed_at=timezone.now(), cdrom_drive=plan.cdrom is not None,
                cdrom=plan.cdrom.image if plan.cdrom else None,
                cdrom_target=plan.cdrom.target[:16] if plan.cdrom else "hdc",
                cdrom_bus=plan.cdrom.bus[:16] if plan.cdrom else "ide")
            for disk in plan.disks:
                pool = pools[disk.pool]
                assert pool is not None
                if Volume.objects.filter(pool=pool, name=disk.volume).exists():
                    raise Conflict(f"The volume {disk.volume} of pool {disk.pool} was recorded in the meantime.")
                volume = volume_adopt(pool=pool, name=disk.volume, path=disk.path, fmt=disk.format,
                                      capacity_bytes=disk.capacity_bytes, backing_image=disk.backing_image)
                VMDisk.objects.create(vm=vm, volume=volume, target=disk.target, bus=disk.bus, readonly=disk.readonly)
            # Locked: a network being deleted or reshaped waits for these NICs (as in vm_create).
            list(Network.objects.select_for_update().filter(pk__in=[n.network.pk for n in plan.nics]))
            for nic in plan.nics:
                VMNic.objects.create(vm=vm, network=nic.network, mac=nic.mac, model=nic.model[:8],
                                     status=VMNic.Status.ATTACHED)
            over = f" Quota overridden ({exceeded.message}): {reason}" if exceeded else ""
            note = f" Reason: {reason}" if reason and not exceeded else ""
            audit(actor=admin, via=via, action="vm.adopt", target=vm,
                  message=(f"Adopted domain {definition.name} on {host.name} as {vm_name} for "
                           f"{owner.get_username()}: {vcpus} vCPU, {memory_mib} MiB, {disk_gib} GiB, "
                           f"{len(plan.disks)} disk(s), {len(plan.nics)} NIC(s), {definition.state}.{over}{note}"),
                  data={"domain": definition.name, "uuid": definition.uuid, "host": host.name,
                        "owner": owner.get_username(), "group": group.name if group else None,
                        "vcpus": vcpus, "memory_mib": memory_mib, "disk_gib": disk_gib,
                        "disks": [f"{d.pool}/{d.volume}" for d in plan.disks],
                        "nics": [f"{n.mac}@{n.network.name}" for n in plan.nics],
                        "override_reason": reason, "quota_exceeded": exceeded.message if exceeded else "",
                        "left_alone": list(plan.left_alone)})
    except QuotaExceeded as exc:
        audit(actor=admin, via=via, action="vm.adopt", target_type="domain", target_id=definition.uuid,
              target_name=definition.name, outcome=AuditEvent.Outcome.DENIED,
              message=f"Cannot adopt {definition.name} for {owner.get_username()}: {exc.message} "
                      "(an override reason adopts it anyway)")
        raise
    except IntegrityError:  # a twin request won the (owner, name) or the UUID
        raise ValidationFailed(f"{whose} a VM named {vm_name!r}, or the domain was adopted in the meantime.",
                               field="name") from None
    # Act: the portal's metadata into the running domain and its definition, without a restart.
    try:
        get_driver(host.uri).set_metadata(definition.uuid, domain_metadata(vm))
    except PortalError as exc:
        _forget(vm)
        audit(actor=admin, via=via, action="vm.adopt", target_type="domain", target_id=definition.uuid,
              target_name=definition.name, outcome=AuditEvent.Outcome.FAILED,
              message=f"Adopting {definition.name} failed while writing its metadata, nothing was kept: "
                      f"{exc.message}")
        raise
    foreign_domain_forget(host=host, uuid=definition.uuid)
    vm_publish(vm)
    return vm


def vm_delete_note(*, vm: VM) -> str:
    """What Delete does to an adopted VM (doors show it when adopting and before deleting)."""
    volumes = ", ".join(f"{v.name} (pool {v.pool.name})" for v in Volume.objects.filter(attachments__vm=vm)
                        .select_related("pool")) or "none"
    return (f"{vm.name} is now managed like any portal VM: Delete powers it off, undefines the domain and deletes "
            f"its volumes ({volumes}). Release instead makes the portal forget it and leaves the domain and its "
            "disks as they are.")


def _valid_description(text: str) -> bool:
    try:
        validate_description(text)
    except ValidationFailed:
        return False
    return True


def _forget(vm: VM) -> list[str]:
    """Remove the VM's rows (snapshots, NICs, attachments, volumes, the VM) and nothing in libvirt."""
    volumes = list(Volume.objects.filter(attachments__vm=vm))
    with transaction.atomic():
        vm.snapshots.all().delete()
        vm.nics.all().delete()
        vm.disks.all().delete()
        for volume in volumes:
            volume_forget(volume=volume)
        VM.objects.filter(pk=vm.pk).delete()
    return [v.name for v in volumes]


def _release_refusal(vm: VM) -> str | None:
    if vm.status == VMStatus.DELETED:
        return f"{vm.name} is deleted."
    if vm.status in VMStatus.TRANSITIONAL:
        return f"{vm.name} is busy ({vm.get_status_display().lower()}); try again when it has finished."
    job = _active_job(vm)
    if job is not None:
        return (f"a {job.kind.split('.', 1)[-1].replace('.', ' ')} job is {job.get_status_display().lower()} on "
                f"{vm.name}; try again when it has finished.")
    if vm.snapshots.filter(status__in=SnapshotStatus.BUSY).exists():
        return f"a snapshot operation is under way on {vm.name}; try again when it has finished."
    if vm.nics.exclude(status=VMNic.Status.ATTACHED).exists():
        return f"a NIC of {vm.name} is being added or removed; try again when it has finished."
    if vm.cdrom_id is not None:
        return (f"the portal's image {vm.cdrom.name if vm.cdrom else vm.cdrom_id} is in its CD-ROM drive: "
                "released, the domain would keep pointing at a file the portal may delete. Eject it first.")
    backed = Volume.objects.filter(attachments__vm=vm, backing_image__isnull=False).select_related(
        "backing_image").first()
    if backed is not None:
        assert backed.backing_image is not None
        return (f"its disk {backed.name} is a thin overlay on the portal's image {backed.backing_image.name}: "
                "released, it would break when that image is deleted.")
    return None


def vm_release(*, actor: Actor, via: str, vm: VM | int, reason: str = "") -> None:
    """The portal forgets a VM and leaves its domain and disks on the host as they are (administrators).

    The portal's metadata leaves the domain (live and persistent, no restart); the VM's rows, its
    disks' and NICs' rows go, and with them its quota charge; the audit trail keeps the release.
    The domain is listed as foreign again at once. Refused while a job or snapshot operation runs.
    """
    admin = _require_admin(actor, "Only administrators release VMs.")
    reason = _validate_reason(reason, "reason")
    pk = vm.pk if isinstance(vm, VM) else vm
    with transaction.atomic():
        found = VM.objects.select_for_update().filter(pk=pk).first()
        if found is None:
            raise NotFound(f"VM {pk} not found.")
        refusal = _release_refusal(found)
    if refusal:
        audit(actor=admin, via=via, action="vm.release", target=found, outcome=AuditEvent.Outcome.DENIED,
              message=f"Cannot release {found.name}: {refusal}")
        raise Conflict(f"Cannot release {found.name}: {refusal}")
    host, uuid = found.host, str(found.uuid)
    driver = get_driver(host.uri)
    info = None
    try:
        driver.set_metadata(uuid, None)
        info = driver.domain_info(uuid)
    except DomainNotFound:
        pass
    exists = info is not None
    with transaction.atomic():
        vm_row = VM.objects.select_for_update().select_related("owner").get(pk=pk)
        refusal = _release_refusal(vm_row)
        if refusal is None:
            _release_rows(admin=admin, via=via, vm=vm_row, reason=reason, info=info)
    if refusal:  # something started in between: the VM stays the portal's, metadata included
        if exists:
            driver.set_metadata(uuid, domain_metadata(vm_row))
        raise Conflict(f"Cannot release {vm_row.name}: {refusal}")
    vm_row.status = VMStatus.DELETED
    vm_publish(vm_row)  # pages showing it drop it


def _release_rows(*, admin: User, via: str, vm: VM, reason: str, info: DomainInfo | None) -> None:
    """Record phase of a release (in the caller's transaction): audit, forget the rows, list it as foreign."""
    vm_row, host, uuid = vm, vm.host, str(vm.uuid)
    volumes = [f"{v.pool.name}/{v.name}" for v in Volume.objects.filter(attachments__vm=vm_row).select_related("pool")]
    why = f" Reason: {reason}" if reason else ""
    audit(actor=admin, via=via, action="vm.release", target=vm_row,
          message=(f"Released {vm_row.name} (owner {vm_row.owner.get_username()}): the portal forgot it; "
                   f"domain {vm_row.domain_name} on {host.name} and its disks ({', '.join(volumes) or 'none'}) "
                   f"were left as they are.{why}"),
          data={"domain": vm_row.domain_name, "uuid": uuid, "host": host.name,
                "owner": vm_row.owner.get_username(), "volumes": volumes, "reason": reason,
                "domain_missing": info is None})
    _forget(vm_row)
    if info is not None:
        foreign_domain_record(host=host, uuid=uuid, name=info.name, state=info.state)
