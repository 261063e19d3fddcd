"""Live updates over a websocket (ws/updates/): VM states and job progress, pushed as JSON.

Two sources feed one stream, with the event shapes of `vms.services.vm_event` and
`portal.jobs.job_event`:

- channel-layer group messages (`portal.event`) published by services in this process, or by any
  process when the channel layer is Redis;
- a light database poll every `poll_interval` seconds, because the default in-memory channel layer
  does not cross processes and jobs run in a separate worker. Only what changed is sent.

A page may also watch a VM it shows (`{"type": "watch", "vm": ID}`): the connection joins that VM's
group (`portal.events.vm_watch_group`) once the VM is found visible to the user, and gets what apps
publish there (the monitoring collector's new samples, `{"kind": "vm.sample", ...}`).

`live_state` is also what `/vms/status.json` returns, for browsers whose websocket cannot connect.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.db.models import Q
from django.utils import timezone

from portal.choices import JobStatus
from portal.events import STAFF_GROUP, team_group, user_group, vm_watch_group
from portal.exceptions import PortalError
from portal.jobs import job_event
from portal.jobs.selectors import job_visible

from .choices import VMStatus
from .selectors import vm_get, vm_nic_states, vm_visible
from .services import vm_event

log = logging.getLogger(__name__)

# Jobs that finished this recently are still reported, so their final state is never missed.
RECENT_JOBS = timedelta(minutes=2)
MAX_JOBS = 100
CLOSE_UNAUTHENTICATED = 4401
MAX_WATCHED = 20  # VMs one connection may watch


def _watchable(user, vm_id: object) -> int | None:
    """The VM's id if `user` may see it, else None (a missing VM and another's look alike)."""
    try:
        return vm_get(user=user, vm_id=vm_id).pk
    except PortalError:
        return None


def live_state(*, user) -> dict[str, list[dict[str, Any]]]:
    """The user's visible VMs and their active or recently finished jobs, as live events.

    Each VM event also carries `nics` (a fingerprint of its NICs) and `address` (its first known IP):
    NICs and addresses change in the job workers and the monitor, other processes whose pushed events
    the default in-memory channel layer does not carry here, so this poll is what notices them.
    """
    visible = vm_visible(user=user).select_related(None)
    vms = list(visible.only("id", "uuid", "name", "status", "power_state", "last_error", "updated_at"))
    # The NICs of the same VMs through a subquery, not a list of every visible id as parameters (issue #13).
    nics = vm_nic_states(vms=visible.order_by().values("pk")) if vms else {}
    since = timezone.now() - RECENT_JOBS
    jobs = (job_visible(user=user).select_related(None)
            .filter(Q(status__in=JobStatus.ACTIVE) | Q(updated_at__gte=since))
            .order_by("-created_at")[:MAX_JOBS])
    events = []
    for vm in vms:
        sig, address = nics.get(vm.pk, ("", ""))
        events.append({**vm_event(vm), "nics": sig, "address": address})
    return {"vms": events, "jobs": [job_event(job) for job in jobs]}


def _user_groups(user) -> list[str]:
    groups = [user_group(user.id)]
    groups += [team_group(pk) for pk in user.groups.values_list("pk", flat=True)]
    if user.is_staff:
        groups.append(STAFF_GROUP)
    return groups


def _vm_key(event: dict) -> tuple:
    return (event["name"], event["status"], event["power_state"], event["last_error"], event.get("nics"),
            event.get("address"))


def _job_key(event: dict) -> tuple:
    return (event["status"], event["progress"], event["step"], event["error"])


class UpdatesConsumer(AsyncJsonWebsocketConsumer):
    """Pushes every change to the VMs and jobs the signed-in user may see; anonymous users are refused."""

    poll_interval = 1.5

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.user = user
        self.joined: list[str] = await database_sync_to_async(_user_groups)(user)
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        self.sent_vms: dict[int, dict] = {}
        self.sent_jobs: dict[str, tuple] = {}
        self.watched: set[int] = set()
        await self.accept()
        self.poller = asyncio.create_task(self._poll_forever())

    async def disconnect(self, code: int) -> None:
        poller = getattr(self, "poller", None)
        if poller is not None:
            poller.cancel()
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs) -> None:
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"kind": "pong"})
        elif isinstance(content, dict) and content.get("type") == "watch" and isinstance(content.get("vm"), int | str):
            await self.watch_vm(content["vm"])

    async def watch_vm(self, vm_id: object) -> None:
        """Join the VM's watch group, if the user may see the VM (at most MAX_WATCHED per connection)."""
        if len(self.watched) >= MAX_WATCHED:
            return
        pk = await database_sync_to_async(_watchable)(self.user, vm_id)
        if pk is None or pk in self.watched:
            return
        self.watched.add(pk)
        self.joined.append(vm_watch_group(pk))
        await self.channel_layer.group_add(vm_watch_group(pk), self.channel_name)

    async def portal_event(self, message: dict) -> None:
        """A group message from a service: forward it as it is."""
        event = message.get("event") or {}
        await self.send_json(event)
        if event.get("kind") == "vm" and event.get("id") in self.sent_vms:
            # A pushed event has no NIC fingerprint: keep the one the page was last told about.
            previous = self.sent_vms[event["id"]]
            self.sent_vms[event["id"]] = {"nics": previous.get("nics"), "address": previous.get("address"), **event}
        elif event.get("kind") == "job":
            self.sent_jobs[event["id"]] = _job_key(event)

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed poll (database busy) must not end the stream
                log.warning("live update poll failed", exc_info=True)
            await asyncio.sleep(self.poll_interval)

    async def poll_once(self) -> None:
        """Send what changed since the last poll (everything, the first time)."""
        state = await database_sync_to_async(live_state)(user=self.user)
        seen = set()
        for event in state["vms"]:
            seen.add(event["id"])
            previous = self.sent_vms.get(event["id"])
            if previous is None or _vm_key(previous) != _vm_key(event):
                await self.send_json(event)
            self.sent_vms[event["id"]] = event
        if not getattr(self, "snapshot_sent", False):
            # The page was rendered before this socket opened: tell it every VM that still exists,
            # so rows of VMs deleted in between go away.
            await self.send_json({"kind": "snapshot", "vm_ids": sorted(seen)})
            self.snapshot_sent = True
        for vm_id in set(self.sent_vms) - seen:  # deleted, or no longer visible to this user
            gone = {**self.sent_vms.pop(vm_id), "status": VMStatus.DELETED,
                    "status_label": VMStatus.DELETED.label, "power_state": ""}
            await self.send_json(gone)
        sent_jobs = {}
        for event in reversed(state["jobs"]):  # oldest first, so pages list new jobs in order
            key = sent_jobs[event["id"]] = _job_key(event)
            if self.sent_jobs.get(event["id"]) != key:
                await self.send_json(event)
        self.sent_jobs = sent_jobs  # jobs that left the window are forgotten
