"""What the disk doors (web, API, CLI, admin) read: a VM's disks, one disk by id/target/label, one
visible data disk, and the property fields a user may set (disks' and NICs'). Read-only helpers for the doors of issue #11
(part 6); every rule stays in vms.disks (add, remove, grow, properties, delete) and vms.properties.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.db.models import QuerySet

from portal.actors import Actor, is_admin
from portal.exceptions import NotFound, ValidationFailed
from storage.models import Volume

from . import disks as disk_services
from .models import VM, DevicePropertyRule, VMDisk
from .properties import DISK, NIC, property_catalog
from .validation import parse_id


@dataclass(frozen=True)
class PropertyField:
    """One device property as a form shows it: the catalog's entry narrowed to what this user may choose."""

    name: str
    label: str
    help: str
    kind: str  # "choice", "int", "text"
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None


def vm_disks(*, vm: VM) -> list[VMDisk]:
    """The VM's disks in target order (vda, vdb, …, sda, …), with their volumes and storage domains."""
    return sorted(vm.disks.select_related("volume__pool", "volume__owner", "volume__group"),
                  key=lambda d: (len(d.target), d.target, d.pk))


def vm_disk_get(*, vm: VM, key: object) -> VMDisk:
    """One of the VM's disks by attachment id, target (vdb) or its data disk's label."""
    text = str(key).strip()
    qs = vm.disks.select_related("volume__pool", "volume__owner", "volume__group")
    found = None
    if (pk := parse_id(text)) is not None:
        found = qs.filter(pk=pk).first()
    if found is None and text:
        found = qs.filter(target=text).first() or qs.filter(volume__label=text).first()
    if found is None:
        raise NotFound(f"{vm.name} has no disk {text[:63]!r}.")
    return found


def is_data_disk(volume: Volume) -> bool:
    """A data disk (made by a user, may be detached and outlive the VM) has an owner (vms.disks.is_data_disk)."""
    return volume.owner_id is not None


def data_volumes(*, actor: Actor) -> QuerySet[Volume]:
    """The data disks the actor may see (vms.disks.data_volumes_visible), with their attachments."""
    return (disk_services.data_volumes_visible(actor)
            .select_related("pool__host", "owner", "group")
            .prefetch_related("attachments__vm")
            .order_by("label", "pk"))


def data_volume_get(*, actor: Actor, key: object) -> Volume:
    """One data disk the actor may see, by id or label (others' are not found, like missing ones)."""
    text = str(key).strip()
    qs = data_volumes(actor=actor)
    found = qs.filter(pk=pk).first() if (pk := parse_id(text)) is not None else None
    if found is None and text:
        found = qs.filter(label=text).first()
    if found is None:
        raise NotFound(f"No disk {text[:63]!r}.")
    return found


def disk_property_fields(*, user: Actor) -> list[PropertyField]:
    """The disk properties this user may set (administrators: all; users: those a DevicePropertyRule
    opens, with its allowed values)."""
    return _property_fields(user=user, device=DISK)


def nic_property_fields(*, user: Actor) -> list[PropertyField]:
    """The NIC properties (boot_order) this user may set, as disk_property_fields (the web NICs panel)."""
    return _property_fields(user=user, device=NIC)


def _property_fields(*, user: Actor, device: str) -> list[PropertyField]:
    catalog = property_catalog(device)
    admin = is_admin(user)
    rules = {r.name: r for r in DevicePropertyRule.objects.filter(device=device)}
    fields = []
    for info in catalog:
        rule = rules.get(info.name)
        if not admin and (rule is None or not rule.users_may_set):
            continue
        choices = info.choices
        if not admin and rule is not None and rule.allowed_values and choices:
            allowed = {str(v).lower() for v in rule.allowed_values}
            choices = tuple(c for c in choices if c.lower() in allowed)
        fields.append(PropertyField(name=info.name, label=info.label, help=info.help, kind=info.kind,
                                    choices=choices, minimum=info.minimum, maximum=info.maximum))
    return fields


def properties_text(properties: dict | None) -> str:
    """`cache=none, serial=abc` for lists (CLI, admin)."""
    return ", ".join(f"{k}={v}" for k, v in sorted((properties or {}).items())) or "-"


@contextmanager
def size_field() -> Iterator[None]:
    """A size error of the disk services (checked as a VM's `disk_gib`) is about the doors' `size_gib` field."""
    try:
        yield
    except ValidationFailed as exc:
        if "disk_gib" not in exc.errors:
            raise
        errors = {("size_gib" if k == "disk_gib" else k): v for k, v in exc.errors.items()}
        raise ValidationFailed(errors) from None
