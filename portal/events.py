"""Live updates: push VM and job changes to the channel-layer groups of everyone who may see them."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)

STAFF_GROUP = "portal.staff"


def user_group(user_id: int) -> str:
    return f"portal.user.{user_id}"


def team_group(group_id: int) -> str:
    return f"portal.team.{group_id}"


def vm_watch_group(vm_id: int) -> str:
    """The pages that show one VM and asked to watch it (the live connection checked they may see it)."""
    return f"portal.vm.{vm_id}.watch"


def _send(groups: list[str], message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    for group in groups:
        try:
            async_to_sync(layer.group_send)(group, message)
        except Exception:  # a live update must never break the action that caused it
            log.warning("could not publish to %s", group, exc_info=True)


def publish(groups: list[str], event: dict[str, Any]) -> None:
    """Send `event` to the groups once the surrounding transaction commits."""
    message = {"type": "portal.event", "event": event}
    transaction.on_commit(lambda: _send(groups, message))


def publish_each(events: list[tuple[str, dict[str, Any]]]) -> None:
    """Send each (group, event) pair once the surrounding transaction commits, all in one trip to the
    channel layer's event loop (the collector tells up to thousands of VMs' watchers each interval; a
    group nobody joined costs the layer a lookup)."""
    if not events:
        return

    async def send_all() -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        for group, event in events:
            await layer.group_send(group, {"type": "portal.event", "event": event})

    def send() -> None:
        try:
            async_to_sync(send_all)()
        except Exception:  # a live update must never break the action that caused it
            log.warning("could not publish %d event(s)", len(events), exc_info=True)

    transaction.on_commit(send)
