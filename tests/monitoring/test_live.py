"""Live samples (issue #14 part 2): a VM page watches its VM over the updates websocket; each new sample
the collector stores reaches it as `vm.sample`; a user who may not see the VM cannot watch it."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from monitoring.collector import samples_record
from portal.hypervisor import DomainState, DomainStats, PowerState
from portal.routing import websocket_urlpatterns
from vms.choices import VMStatus
from vms.consumers import UpdatesConsumer
from vms.models import VM

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

application = URLRouter(websocket_urlpatterns)


@pytest.fixture(autouse=True)
def fast_poll(monkeypatch):
    monkeypatch.setattr(UpdatesConsumer, "poll_interval", 0.2)


async def _connect(user) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, "/ws/updates/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


async def _next_sample(communicator, timeout: float = 8.0) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        event = await communicator.receive_json_from(timeout=max(0.01, deadline - loop.time()))
        if event.get("kind") == "vm.sample":
            return event


@database_sync_to_async
def _collect_twice(vm: VM) -> None:
    now = timezone.now()
    for i, cpu in enumerate((1.0, 16.0)):
        stats = DomainStats(domain_id=5, cpu_time_ns=int(cpu * 1e9), vcpus=1)
        samples_record(host=vm.host, now=now + timedelta(seconds=30 * i),
                       domains=[DomainState(name="w", uuid=str(vm.uuid), state=PowerState.RUNNING, stats=stats)])


async def test_a_watched_vm_gets_its_new_samples_and_others_cannot_watch_it(test_host, alice, bob):
    vm = await database_sync_to_async(VM.objects.create)(
        owner=alice, host=test_host, name="live", vcpus=1, memory_mib=128, disk_gib=1, status=VMStatus.RUNNING)
    owner = await _connect(alice)
    stranger = await _connect(bob)
    try:
        await owner.send_json_to({"type": "watch", "vm": vm.pk})
        await stranger.send_json_to({"type": "watch", "vm": vm.pk})
        await asyncio.sleep(0.5)  # both watch requests handled (the owner's poll runs meanwhile)
        await _collect_twice(vm)
        event = await _next_sample(owner)
        assert event["id"] == vm.pk and event["point"]["cpu_pct"] == pytest.approx(50.0)
        heard = []
        while not await stranger.receive_nothing(timeout=1.0):
            heard.append(await stranger.receive_json_from(timeout=1))
        assert not [e for e in heard if e.get("kind") == "vm.sample" or e.get("id") == vm.pk], heard
    finally:
        await owner.disconnect()
        await stranger.disconnect()
