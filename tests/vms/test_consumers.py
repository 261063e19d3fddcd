"""The live-updates websocket (ws/updates/): who may connect and who hears about which VM."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from portal.choices import Via
from portal.routing import websocket_urlpatterns
from vms.choices import VMStatus
from vms.consumers import UpdatesConsumer
from vms.models import VM
from vms.services import vm_create, vm_set_status

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


async def _receive_until(communicator, predicate, timeout: float = 8.0) -> dict:
    """Read events until one matches (the first poll also reports the current state)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen = []
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"no matching event; got {seen}")
        event = await communicator.receive_json_from(timeout=remaining)
        seen.append(event)
        if predicate(event):
            return event


@database_sync_to_async
def _create_vm(owner, name: str) -> VM:
    return vm_create(actor=owner, via=Via.API, name=name, vcpus=1, memory_mib=128, disk_gib=1).vm


@database_sync_to_async
def _set_status(vm: VM, status: str) -> None:
    vm_set_status(VM.objects.get(pk=vm.pk), status)


async def test_anonymous_users_are_refused():
    communicator = WebsocketCommunicator(application, "/ws/updates/")
    communicator.scope["user"] = AnonymousUser()
    connected, code = await communicator.connect(timeout=5)
    assert not connected
    assert code == 4401


async def test_the_owner_hears_a_status_change_of_their_vm_and_another_user_does_not(alice, bob, test_host):
    vm = await _create_vm(alice, "web-1")
    owner = await _connect(alice)
    other = await _connect(bob)
    try:
        first = await _receive_until(owner, lambda e: e.get("kind") == "vm" and e["id"] == vm.pk)
        assert first["name"] == "web-1"
        await _set_status(vm, VMStatus.STOPPED)
        event = await _receive_until(owner, lambda e: e.get("kind") == "vm" and e["status"] == "stopped")
        assert event == {**event, "id": vm.pk, "uuid": str(vm.uuid), "name": "web-1", "status": "stopped",
                         "status_label": "Stopped"}
        # Bob only ever hears that his own (empty) list of VMs exists, nothing about Alice's.
        heard = []
        while not await other.receive_nothing(timeout=1.0):
            heard.append(await other.receive_json_from())
        assert heard == [{"kind": "snapshot", "vm_ids": []}]
    finally:
        await owner.disconnect()
        await other.disconnect()


async def test_job_progress_and_deletion_reach_the_owner(alice, test_host):
    """Changes written by another process are found by the poll (the channel layer is in-memory)."""
    vm = await _create_vm(alice, "web-2")
    owner = await _connect(alice)
    try:
        await _receive_until(owner, lambda e: e.get("kind") == "job" and e["target_id"] == str(vm.pk))
        # Written straight to the table, as a worker process would, with no group message here.
        await database_sync_to_async(
            lambda: VM.objects.filter(pk=vm.pk).update(status=VMStatus.DELETED))()
        gone = await _receive_until(owner, lambda e: e.get("kind") == "vm" and e["status"] == "deleted")
        assert gone["id"] == vm.pk and gone["status_label"] == "Deleted"
    finally:
        await owner.disconnect()
