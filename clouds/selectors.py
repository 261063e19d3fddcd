"""Reading cloud connections (administrators only: a connection is back-office configuration)."""

from __future__ import annotations

from django.db.models import QuerySet

from portal.actors import Actor, require_admin
from portal.exceptions import NotFound

from .models import Cloud


def cloud_list(*, actor: Actor) -> QuerySet[Cloud]:
    require_admin(actor, "Only administrators see cloud connections.")
    return Cloud.objects.order_by("name")


def cloud_get(*, actor: Actor, key: str | int) -> Cloud:
    """A cloud by numeric id or by name."""
    require_admin(actor, "Only administrators see cloud connections.")
    text = str(key).strip()
    found = Cloud.objects.filter(pk=int(text)).first() if text.isdigit() else Cloud.objects.filter(name=text).first()
    if found is None:
        raise NotFound(f"No cloud {text!r}.")
    return found
