"""Small presentation filters for the portal's templates: sizes with units, relative times."""

from __future__ import annotations

from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils import timezone
from django.utils.html import format_html

from portal import units
from portal.jobs import labels

register = template.Library()


@register.filter
def job_label(kind: str) -> str:
    """'vm.force_off' → 'Force off' (labels registered by the apps, see portal.jobs.labels)."""
    return labels.job_label(kind)


register.filter("mib", units.mib)
register.filter("gib", units.gib)
register.filter("filesize", units.filesize)


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
