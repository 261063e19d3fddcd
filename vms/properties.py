"""Per-device custom properties (oVirt 3.3): a fixed, validated catalog — never raw XML from users.

Disks: cache, io, discard, detect_zeroes, serial, boot_order, and I/O limits (total/read/write IOPS and
bytes per second). NICs: boot_order (the model is the NIC's own field). Administrators decide which
properties users may set, and to which values (vms.models.DevicePropertyRule); without a rule a
property is for administrators only.

What is checked here, on the merged result (`current` with the change over it):
- each value against the catalog (choice, whole number within its range, serial's characters);
- combinations QEMU and libvirt refuse: io=native needs cache=none or directsync (QEMU: "aio=native
  requires cache.direct=on"), detect_zeroes=unmap needs discard=unmap, and a total_* limit excludes the
  read_*/write_* limits of the same kind (libvirt: "total and read/write of the same kind cannot be set
  at the same time");
- who may set what: administrators (and the system) everything valid; users only properties whose rule
  allows them, only its allowed values when it lists some — and then users cannot remove the property
  (its default is none of those values). Only what changes is checked, so a user can resubmit a
  device's properties that an administrator set.
A boot order must also be unique among the VM's devices: that needs the VM, so `check_boot_order`
does it (callers that know the VM call it too). libvirt refuses `<os><boot dev>` together with
per-device boot orders; the domain XML emits the former only when no device has an order, so a VM whose
devices get an order boots only from the devices that have one (give the boot disk one too).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from portal.actors import is_admin
from portal.exceptions import PermissionDenied, ValidationFailed

from .validation import parse_whole_number

DISK = "disk"
NIC = "nic"


@dataclass(frozen=True)
class PropertyInfo:
    """One property of the catalog, as forms, the API schema and help texts show it."""

    device: str
    name: str
    label: str
    help: str
    kind: str  # "choice", "int", "text"
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None


BOOT_ORDER_MAX = 32
SERIAL_MAX = 20
_SERIAL_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
IOPS_MAX = 10_000_000  # far beyond any disk; a typo of a few zeros is still caught
BYTES_MAX = 1_000_000_000_000  # 1 TB/s
IOTUNE_KEYS = ("total_bytes_sec", "read_bytes_sec", "write_bytes_sec",
               "total_iops_sec", "read_iops_sec", "write_iops_sec")  # libvirt's <iotune> element order

_BOOT_HELP = (f"Position in the firmware's boot order (1 first, at most {BOOT_ORDER_MAX}), unique among the VM's "
              "devices; applies at the next start. Once any device has one, only devices with one boot.")

_CATALOG: dict[str, tuple[PropertyInfo, ...]] = {
    DISK: (
        PropertyInfo(DISK, "cache", "Cache mode", "Host page cache use: none and directsync bypass it (safe for "
                     "the guest's data); writeback is fast; unsafe ignores flushes (scratch disks only).",
                     "choice", ("none", "writethrough", "writeback", "directsync", "unsafe")),
        PropertyInfo(DISK, "io", "I/O mode", "How QEMU submits I/O: threads, native (Linux AIO; needs cache none or "
                     "directsync) or io_uring.", "choice", ("threads", "native", "io_uring")),
        PropertyInfo(DISK, "discard", "Discard", "unmap passes the guest's TRIM/discard to the image, freeing space; "
                     "ignore drops it.", "choice", ("ignore", "unmap")),
        PropertyInfo(DISK, "detect_zeroes", "Detect zeroes", "Turn writes of zeroes into zero writes (on) or "
                     "discards (unmap; needs discard unmap).", "choice", ("off", "on", "unmap")),
        PropertyInfo(DISK, "serial", "Serial", f"The serial number the guest sees (at most {SERIAL_MAX} letters, "
                     "digits, '_', '.', '-'); applies at the next start.", "text"),
        PropertyInfo(DISK, "boot_order", "Boot order", _BOOT_HELP, "int", minimum=1, maximum=BOOT_ORDER_MAX),
        PropertyInfo(DISK, "total_iops_sec", "Total IOPS", "Limit of read and write operations per second "
                     "(0: none; excludes the read and write IOPS limits). Changes live.", "int", minimum=0,
                     maximum=IOPS_MAX),
        PropertyInfo(DISK, "read_iops_sec", "Read IOPS", "Limit of read operations per second (0: none).", "int",
                     minimum=0, maximum=IOPS_MAX),
        PropertyInfo(DISK, "write_iops_sec", "Write IOPS", "Limit of write operations per second (0: none).", "int",
                     minimum=0, maximum=IOPS_MAX),
        PropertyInfo(DISK, "total_bytes_sec", "Total bytes/s", "Limit of bytes read and written per second (0: none; "
                     "excludes the read and write bandwidth limits). Changes live.", "int", minimum=0,
                     maximum=BYTES_MAX),
        PropertyInfo(DISK, "read_bytes_sec", "Read bytes/s", "Limit of bytes read per second (0: none).", "int",
                     minimum=0, maximum=BYTES_MAX),
        PropertyInfo(DISK, "write_bytes_sec", "Write bytes/s", "Limit of bytes written per second (0: none).", "int",
                     minimum=0, maximum=BYTES_MAX),
    ),
    NIC: (
        PropertyInfo(NIC, "boot_order", "Boot order", _BOOT_HELP, "int", minimum=1, maximum=BOOT_ORDER_MAX),
    ),
}


def property_catalog(device: str) -> list[PropertyInfo]:
    """Every property a device kind has, in display order."""
    if device not in _CATALOG:
        raise ValueError(f"unknown device kind {device!r}")
    return list(_CATALOG[device])


def property_info(device: str, name: str) -> PropertyInfo | None:
    """One property of the catalog, or None when the device kind has no such property."""
    return next((p for p in _CATALOG.get(device, ()) if p.name == name), None)


def _fail(message: str) -> ValidationFailed:
    return ValidationFailed(message, field="properties")


def normalise_value(info: PropertyInfo, value: object) -> str | int:
    """One value as stored (ints as ints, choices lower-case), or ValidationFailed naming the property."""
    if info.kind == "int":
        if isinstance(value, bool):
            raise _fail(f"{info.name} must be a whole number, not {value!r}.")
        if isinstance(value, int):
            number = value
        elif isinstance(value, str) and (parsed := parse_whole_number(value, digits=30)) is not None:
            number = parsed
        elif isinstance(value, str) and re.fullmatch(r"-[0-9]{1,30}", value.strip()):
            number = int(value.strip())  # negative: the range message below (trial #12)
        elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            raise _fail(f"{info.name} must be between {info.minimum or 0} and {info.maximum}.")  # 31+ digits
        else:
            raise _fail(f"{info.name} must be a whole number, not {str(value)[:40]!r}.")
        low = info.minimum if info.minimum is not None else 0
        if number < low or (info.maximum is not None and number > info.maximum):
            got = f", not {number}" if -10**20 < number < 10**20 else ""  # str() of a huge int fails
            span = f"between {low} and {info.maximum}" if info.maximum is not None else f"{low} or more"
            raise _fail(f"{info.name} must be {span}{got}.")
        return number
    if not isinstance(value, str):
        raise _fail(f"{info.name} must be text, not {str(value)[:40]!r}.")
    text = value.strip()
    if info.kind == "choice":
        text = text.lower()
        if text not in info.choices:
            raise _fail(f"{info.name} must be one of: {', '.join(info.choices)} (not {text[:40]!r}).")
        return text
    # serial
    if len(text) > SERIAL_MAX or not _SERIAL_RE.match(text):
        raise _fail(f"serial must be 1 to {SERIAL_MAX} letters, digits, '_', '.' or '-' (not {text[:40]!r}).")
    return text


def _check_combinations(device: str, merged: Mapping[str, Any]) -> None:
    if device != DISK:
        return
    if merged.get("io") == "native" and merged.get("cache") not in ("none", "directsync"):
        raise _fail("io=native needs cache=none or cache=directsync (QEMU refuses native I/O through the host's "
                    "page cache).")
    if merged.get("detect_zeroes") == "unmap" and merged.get("discard") != "unmap":
        raise _fail("detect_zeroes=unmap needs discard=unmap.")
    for kind in ("iops", "bytes"):
        total = merged.get(f"total_{kind}_sec")
        both = [f"{rw}_{kind}_sec" for rw in ("read", "write") if merged.get(f"{rw}_{kind}_sec")]
        if total and both:
            raise _fail(f"total_{kind}_sec cannot be set together with {' or '.join(both)} (libvirt takes a total "
                        "limit or separate read and write limits, not both).")


def _user_may_set(device: str, name: str, value: object) -> None:
    from .models import DevicePropertyRule  # models import nothing of this module; lazily all the same

    rule = DevicePropertyRule.objects.filter(device=device, name=name).first()
    if rule is None or not rule.users_may_set:
        raise PermissionDenied(f"{name} may be set by administrators only.")
    if not rule.allowed_values:
        return
    if value is None:  # the default is no value the rule lists: removing it is for administrators
        raise PermissionDenied(f"{name} is limited to {', '.join(str(v) for v in rule.allowed_values)}: only an "
                               "administrator may remove it.")
    info = property_info(device, name)
    assert info is not None
    allowed = []
    for raw in rule.allowed_values:
        try:
            allowed.append(normalise_value(info, raw))
        except ValidationFailed:
            continue  # a rule value the catalog no longer accepts allows nothing
    if value not in allowed:
        raise PermissionDenied(f"{name} may be one of: {', '.join(str(a) for a in allowed) or '(nothing)'} "
                               f"(not {value!r}); ask an administrator for others.")


def validate_properties(*, device: str, properties: Mapping[str, object] | None, actor: Any,
                        current: Mapping[str, object] | None = None) -> dict[str, Any]:
    """The properties to store: `properties` validated and normalised (ints as ints, choices lower-case),
    merged over `current` (a value of None or "" removes a property). Raises ValidationFailed (field
    "properties", naming the property) for an unknown property, a bad value, or one the actor may not
    set (non-administrators: only properties a DevicePropertyRule allows, only its allowed values)."""
    if device not in _CATALOG:
        raise _fail(f"Unknown device kind {device!r}.")
    merged: dict[str, Any] = dict(current or {})
    if properties is None:
        return merged
    if not isinstance(properties, Mapping):
        raise _fail("Properties must be a mapping of property names to values.")
    admin = actor is None or is_admin(actor)
    for raw_name, raw_value in properties.items():
        name = str(raw_name).strip().lower().replace("-", "_")
        info = property_info(device, name)
        if info is None:
            names = ", ".join(p.name for p in _CATALOG[device])
            raise _fail(f"Unknown {device} property {str(raw_name)[:40]!r}; known: {names}.")
        value = None if raw_value is None or (isinstance(raw_value, str) and not raw_value.strip()) \
            else normalise_value(info, raw_value)
        if value == merged.get(name):
            continue  # unchanged: nothing to allow
        if not admin:
            _user_may_set(device, name, value)
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    _check_combinations(device, merged)
    return merged


def check_boot_order(*, vm: Any, properties: Mapping[str, Any], disk_id: int | None = None,
                     nic_id: int | None = None) -> None:
    """A boot order must be unique among the VM's disks and NICs (the device being changed excluded)."""
    order = properties.get("boot_order")
    if order is None:
        return
    image = getattr(vm, "image", None)
    if image is not None and image.boot_mode == image.BootMode.KERNEL and image.kind != image.Kind.ISO:
        # libvirt refuses per-device boot orders beside the kernel boot's <os> (trial #1)
        raise _fail(f"boot_order does not apply to {vm.name}: it boots its image's kernel directly, not from a "
                    "device.")
    disks = vm.disks.exclude(pk=disk_id) if disk_id is not None else vm.disks.all()
    nics = vm.nics.exclude(pk=nic_id) if nic_id is not None else vm.nics.all()
    for kind, qs in (("disk", disks), ("NIC", nics)):
        for obj in qs:
            if (obj.properties or {}).get("boot_order") == order:
                label = getattr(obj, "target", None) or getattr(obj, "mac", "")
                raise _fail(f"boot_order {order} is already the {kind} {label}'s; each device needs its own.")


def disk_spec_properties(properties: Mapping[str, Any]) -> dict[str, Any]:
    """DiskSpec keyword arguments for stored disk properties (cache, io, ..., iotune)."""
    out: dict[str, Any] = {name: properties[name] for name in ("cache", "io", "discard", "detect_zeroes", "serial")
                           if properties.get(name)}
    if properties.get("boot_order"):
        out["boot_order"] = int(properties["boot_order"])
    iotune = tuple((key, int(properties[key])) for key in IOTUNE_KEYS if properties.get(key))
    if iotune:
        out["iotune"] = iotune
    return out


def nic_spec_properties(properties: Mapping[str, Any]) -> dict[str, Any]:
    """NicSpec keyword arguments for stored NIC properties (boot_order)."""
    return {"boot_order": int(properties["boot_order"])} if properties.get("boot_order") else {}


def iotune_of(properties: Mapping[str, Any]) -> dict[str, int]:
    """All six I/O limits of stored disk properties (0: none), for a live change (set_block_iotune):
    libvirt keeps a limit that is not named, so a removed one is sent as 0."""
    return {key: int(properties.get(key) or 0) for key in IOTUNE_KEYS}
