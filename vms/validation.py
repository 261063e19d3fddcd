"""Input rules for VMs, shared by every door (forms, API serializers and Slack call these services)."""

from __future__ import annotations

import re

import yaml
from django.conf import settings

from portal.exceptions import ValidationFailed

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
NAME_HELP = ("1–63 characters: lowercase letters, digits and hyphens, starting and ending with a "
             "letter or digit (e.g. web-1)")
DESCRIPTION_MAX = 1000


def validate_vm_name(name: object) -> str:
    """The name exactly as given, if it follows the rule; surrounding whitespace is refused, not trimmed."""
    if not isinstance(name, str) or not name.strip():
        raise ValidationFailed("Name is required.", field="name")
    value = name
    if len(value) > 63:
        raise ValidationFailed(f"Name is too long ({len(value)} characters, at most 63).", field="name")
    # fullmatch: `$` alone would accept a trailing newline ("vm\n").
    if not NAME_RE.fullmatch(value):
        raise ValidationFailed(f"Invalid name {value[:70]!r}: use {NAME_HELP}.", field="name")
    return value


def validate_description(description: object, *, limit: int = DESCRIPTION_MAX) -> str:
    if description is None:
        return ""
    if not isinstance(description, str):
        raise ValidationFailed("Description must be text.", field="description")
    if len(description) > limit:
        raise ValidationFailed(f"Description is too long (at most {limit} characters).", field="description")
    if any(ord(c) < 32 and c not in "\n\t" for c in description):
        raise ValidationFailed("Description contains control characters.", field="description")
    return description


SNAPSHOT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def validate_snapshot_name(name: object) -> str:
    """The snapshot name exactly as given, if it follows the rule (like VM names: whitespace is refused)."""
    if not isinstance(name, str) or not name.strip():
        raise ValidationFailed("Snapshot name is required.", field="name")
    value = name
    if len(value) > 63:
        raise ValidationFailed(f"Snapshot name is too long ({len(value)} characters, at most 63).", field="name")
    if value.isdigit():  # a number always means a snapshot's id, in URLs and buttons
        raise ValidationFailed(f"Invalid snapshot name {value!r}: it needs a letter (e.g. v{value}).", field="name")
    if not SNAPSHOT_NAME_RE.fullmatch(value):
        raise ValidationFailed(f"Invalid snapshot name {value[:70]!r}: use 1–63 letters, digits, dots, "
                               "hyphens and underscores, starting with a letter or digit (e.g. before-upgrade).",
                               field="name")
    return value


ID_DIGITS_MAX = 18  # a row id (a 64-bit key) has at most 19 digits; 18 keeps int() and the database safe


def parse_id(key: object) -> int | None:
    """A row id typed as text (or an int), else None: ASCII digits only ("²" and "٣" are digits to
    str.isdigit(), not to int()) and at most ID_DIGITS_MAX of them (int() refuses more than 4300)."""
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key if 0 <= key < 10**ID_DIGITS_MAX else None
    text = str(key).strip()
    if not text or len(text) > ID_DIGITS_MAX or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def parse_whole_number(text: str, *, digits: int = 15) -> int | None:
    """A whole number typed as text (ASCII digits, at most `digits` of them), else None."""
    text = text.strip()
    if not text or len(text) > digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)


_LABELS = {"vcpus": ("vCPUs", ""), "memory_mib": ("Memory", " MiB"), "disk_gib": ("Disk", " GiB")}


def validate_size(field: str, value: object) -> int:
    label, unit = _LABELS[field]
    if isinstance(value, bool):
        raise ValidationFailed(f"{label} must be a whole number.", field=field)
    low, high = settings.VM_LIMITS[field]
    if isinstance(value, str):
        text = value.strip()
        number = parse_whole_number(text, digits=30)
        if number is None and re.fullmatch(r"-[0-9]{1,30}", text):  # a negative number: out of range (trial #12)
            number = int(text)
        if number is None:
            if text.isascii() and text.isdigit():  # more digits than any limit
                raise ValidationFailed(f"{label} must be between {low} and {high}{unit}.", field=field)
            raise ValidationFailed(f"{label} must be a whole number (got {text[:20]!r}).", field=field)
        value = number
    if not isinstance(value, int):
        raise ValidationFailed(f"{label} must be a whole number.", field=field)
    if value < low or value > high:
        got = f" (got {value}{unit})" if -10**20 < value < 10**20 else ""  # str() of a huge int fails
        raise ValidationFailed(f"{label} must be between {low} and {high}{unit}{got}.", field=field)
    return value


USER_DATA_KINDS = {"#cloud-config": "text/cloud-config", "#!": "text/x-shellscript"}


def validate_user_data(value: object) -> str:
    """Optional cloud-init user-data given at create: a #cloud-config document (valid YAML mapping)
    or a script starting with #!, at most settings.USER_DATA_MAX_BYTES (cloud-init's own limit is 16 KiB)."""
    text = str(value or "").replace("\r\n", "\n")
    if not text.strip():
        return ""
    limit = settings.USER_DATA_MAX_BYTES
    size = len(text.encode("utf-8"))
    if size > limit:
        raise ValidationFailed(f"User-data is {size} bytes; at most {limit} bytes are accepted.", field="user_data")
    if "\x00" in text:
        raise ValidationFailed("User-data must be text.", field="user_data")
    first = text.lstrip().split("\n", 1)[0].strip()
    if first.startswith("#cloud-config"):
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise ValidationFailed(f"User-data is not valid YAML{where}.", field="user_data") from None
        if doc is not None and not isinstance(doc, dict):
            raise ValidationFailed("A #cloud-config document must be a mapping of keys to values.", field="user_data")
    elif not first.startswith("#!"):
        raise ValidationFailed("User-data must start with #cloud-config or be a script starting with #!.",
                               field="user_data")
    return text
