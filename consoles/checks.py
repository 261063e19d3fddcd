"""System checks: console limits that cannot work stop `manage.py check`, `migrate`, `runportal`."""

from __future__ import annotations

from django.core.checks import Error, register
from django.core.exceptions import ImproperlyConfigured


@register("consoles")
def console_limits_check(app_configs, **kwargs) -> list[Error]:
    """PORTAL_CONSOLE_TICKET_RATE must parse (N/second|minute|hour|day, or empty for no cap)."""
    # Imported here: services import models, which the app registry must have loaded first.
    from .services import console_ticket_rate

    try:
        console_ticket_rate()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="consoles.E001", hint="For example 30/minute; empty turns the cap off.")]
    return []
