"""Render the VM page's sections that other apps registered (vms.panels). (issue #11)"""

from __future__ import annotations

from django import template
from django.template.loader import render_to_string
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from vms.panels import vm_panels

register = template.Library()


@register.simple_tag
def vm_panel_tabs(vm=None) -> SafeString:
    """One tab link per registered panel (of `vm`'s page)."""
    return format_html_join("", '<a href="#{}">{}</a>', ((p.key, p.title) for p in vm_panels(vm)))


@register.simple_tag(takes_context=True)
def vm_panel_sections(context, vm) -> SafeString:
    """One card per registered panel: its template, rendered with the request (user, CSRF token), `vm`, and
    what the panel's `context(request, vm)` returns."""
    request = context.get("request")
    parts = []
    for panel in vm_panels(vm):
        inner = render_to_string(panel.template, {"vm": vm, **panel.context(request, vm)}, request=request)
        parts.append(format_html('<section class="card" id="{0}" aria-labelledby="{0}-title">'
                                 '<h2 class="card-title" id="{0}-title">{1}</h2>{2}</section>',
                                 panel.key, panel.title, mark_safe(inner)))  # noqa: S308 (rendered template)
    return mark_safe("\n".join(parts))  # noqa: S308 (each part is escaped above)
