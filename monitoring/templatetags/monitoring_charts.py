"""`{% host_charts host %}`: the monitoring charts on the host's admin page (issue #14)."""

from __future__ import annotations

from django import template
from django.template.loader import render_to_string
from django.utils.safestring import SafeString, mark_safe

from monitoring.views import host_charts_context

register = template.Library()


@register.simple_tag(takes_context=True)
def host_charts(context, host) -> SafeString:
    return mark_safe(render_to_string("monitoring/_charts.html", host_charts_context(host),  # noqa: S308
                                      request=context.get("request")))
