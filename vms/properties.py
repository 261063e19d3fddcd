"""Per-device custom properties (oVirt 3.3): a fixed, validated catalog — never raw XML from users.

Disks: cache, io, discard, detect_zeroes, serial, boot_order, and I/O limits (total/read/write IOPS and
bytes per second). NICs: boot_order (the model is the NIC's own field). Administrators decide which
properties users may set, and to which values (vms.models.DevicePropertyRule); without a rule a
property is for administrators only.

STUB (issue #11): signatures fixed, implementation by the properties work.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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


def property_catalog(device: str) -> list[PropertyInfo]:
    """Every property a device kind has, in display order."""
    raise NotImplementedError


def validate_properties(*, device: str, properties: Mapping[str, object] | None, actor: Any,
                        current: Mapping[str, object] | None = None) -> dict[str, Any]:
    """The properties to store: `properties` validated and normalised (ints as ints, choices lower-case),
    merged over `current` (a value of None or "" removes a property). Raises ValidationFailed (field
    "properties", naming the property) for an unknown property, a bad value, or one the actor may not
    set (non-administrators: only properties a DevicePropertyRule allows, only its allowed values)."""
    raise NotImplementedError


def disk_spec_properties(properties: Mapping[str, Any]) -> dict[str, Any]:
    """DiskSpec keyword arguments for stored disk properties (cache, io, ..., iotune)."""
    raise NotImplementedError


def nic_spec_properties(properties: Mapping[str, Any]) -> dict[str, Any]:
    """NicSpec keyword arguments for stored NIC properties (boot_order)."""
    raise NotImplementedError
