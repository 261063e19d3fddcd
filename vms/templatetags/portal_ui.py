"""Small presentation filters for the portal's templates: sizes with units, relative times."""

from __future__ import annotations

from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()

# What a job does, in the words of the buttons that start it.
JOB_LABELS = {
    "vm.create": "Create",
    "vm.start": "Start",
    "vm.stop": "Stop",
    "vm.force_off": "Force off",
    "vm.reboot": "Reboot",
    "vm.pause": "Pause",
    "vm.resume": "Resume",
    "vm.delete": "Delete",
    "vm.disk.grow": "Grow disk",
    "vm.snapshot.create": "Take snapshot",
    "vm.snapshot.revert": "Revert to snapshot",
    "vm.snapshot.delete": "Delete snapshot",
}


@register.filter
def job_label(kind: str) -> str:
    """'vm.force_off' → 'Force off'; unknown kinds read as 'Snapshot create' from 'snapshot.create'."""
    if kind in JOB_LABELS:
        return JOB_LABELS[kind]
    return kind.replace(".", " ").replace("_", " ").capitalize()


def _trim(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


@register.filter
def mib(value) -> str:
    """512 → '512 MiB', 2048 → '2 GiB', 1536 → '1.5 GiB'."""
    try:
        value = int(value)
    except (TypeError, ValueError):
        return ""
    if value >= 1024:
        return f"{_trim(value / 1024)} GiB"
    return f"{value} MiB"


@register.filter
def gib(value) -> str:
    try:
        return f"{int(value)} GiB"
    except (TypeError, ValueError):
        return ""


@register.filter
def filesize(value) -> str:
    """Bytes in binary units: 67108864 → '64 MiB'."""
    try:
        size = float(value)
    except (TypeError, ValueError):
        return ""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{_trim(size)} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return ""


@register.filter
def reltime(value):
    """A <time> element: '3 minutes ago', with the exact time on hover and for machines."""
    if not value:
        return "—"
    local = timezone.localtime(value)
    return format_html('<time datetime="{}" title="{}" data-relative>{}</time>',
                       value.isoformat(), local.strftime("%Y-%m-%d %H:%M:%S %Z"), naturaltime(value))


@register.filter
def get(mapping, key):
    try:
        return mapping.get(key)
    except AttributeError:
        return None


@register.filter
def split(value: str, sep: str | None = None) -> list[str]:
    return value.split(sep)
