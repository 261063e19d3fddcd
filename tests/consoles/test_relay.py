"""The relays against real QEMU: the RFB handshake through the consumer (with the per-domain VNC
password answered by the relay), view-only share links, garbage frames and sessions that end
mid-way; the serial terminal running `uname -a` in the tiny Linux guest, kept private.

Several checks share one VM per test: booting is the expensive part.
"""

from __future__ import annotations

import asyncio
import json
import struct

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group

from consoles.models import ConsoleSession
from consoles.services import (
    console_settings_update,
    console_share_create,
    console_share_revoke,
    console_ticket_issue,
)
from portal.hypervisor import get_driver
from portal.models import AuditEvent
from vms.models import VM

from .conftest import communicator, receive_close, refused

pytestmark = [pytest.mark.qemu, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("close_thread_connections")]


def _create_vm(owner, image, name: str, group=None) -> VM:
    from vms.services import vm_create

    vm = vm_create(actor=owner, via="web", name=name, image=image, vcpus=1, memory_mib=128, disk_gib=1,
                   group=group).vm
    vm = VM.objects.select_related("host").get(pk=vm.pk)
    assert vm.status == "running", vm.last_error
    return vm


def _ticket(user, vm, key, kind="screen", share=None) -> str:
    return console_ticket_issue(actor=user, via="web", vm=vm, kind=kind, session_key=key, share=share).token


_buffers: dict[int, bytearray] = {}


async def _recv_bytes(comm, n: int, timeout: float = 10) -> bytes:
    """Exactly n bytes from the relay (websocket messages may split or join RFB messages).

    Never time out on purpose: asgiref cancels the application when receive_output times out.
    """
    buf = _buffers.setdefault(id(comm), bytearray())
    while len(buf) < n:
        message = await comm.receive_output(timeout=timeout)
        assert message["type"] == "websocket.send", message
        buf += message["bytes"]
    data = bytes(buf[:n])
    del buf[:n]
    return data


async def rfb_handshake(comm) -> tuple[int, int, int, str]:
    """Play noVNC: version, security None (the relay offers only that), ClientInit -> ServerInit."""
    assert await _recv_bytes(comm, 12) == b"RFB 003.008\n"
    await comm.send_to(bytes_data=b"RFB 003.008\n")
    assert await _recv_bytes(comm, 2) == b"\x01\x01", "the relay offers exactly one security type: None"
    await comm.send_to(bytes_data=b"\x01")
    assert await _recv_bytes(comm, 4) == b"\0\0\0\0", "SecurityResult OK"
    await comm.send_to(bytes_data=b"\x00")  # ClientInit exclusive: the relay forces shared anyway
    head = await _recv_bytes(comm, 24)
    width, height, bits = struct.unpack(">HHB", head[:5])
    name = await _recv_bytes(comm, struct.unpack(">I", head[20:24])[0])
    return width, height, bits // 8, name.decode()


async def framebuffer_update(comm, width: int, height: int, bpp: int) -> int:
    """Request a full update and read the whole (raw) FramebufferUpdate; returns its rectangle count."""
    await comm.send_to(bytes_data=struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))
    head = await _recv_bytes(comm, 4, timeout=15)
    assert head[0] == 0, f"expected a FramebufferUpdate, got message type {head[0]}"
    rects = struct.unpack(">H", head[2:4])[0]
    for _ in range(rects):
        _x, _y, w, h, encoding = struct.unpack(">HHHHi", await _recv_bytes(comm, 12))
        assert encoding == 0, f"raw encoding expected, got {encoding}"
        await _recv_bytes(comm, w * h * bpp, timeout=15)
    return rects


async def test_screen_relay_handshake_view_only_share_garbage_and_mid_session_ends(
        firmware_image, alice, bob, session_for, settings):
    settings.CONSOLE_POLL_SECONDS = 0.5
    vm = await sync_to_async(_create_vm)(alice, firmware_image, "screen-test")
    driver = get_driver(vm.host.uri)

    # Per-domain VNC password: in the secure live XML only, and the relay answers the challenge.
    listen, port, password = await sync_to_async(driver.graphics_endpoint)(str(vm.uuid), secure=True)
    assert listen == "127.0.0.1" and port > 0 and password and len(password) == 8
    assert (await sync_to_async(driver.graphics_endpoint)(str(vm.uuid)))[2] is None

    alice_key = await sync_to_async(session_for)(alice)
    bob_key = await sync_to_async(session_for)(bob)

    # 1. The owner: full RFB handshake and a framebuffer update through the consumer.
    token = await sync_to_async(_ticket)(alice, vm, alice_key)
    owner = communicator(f"/ws/consoles/vm/{vm.pk}/screen/?ticket={token}", session_key=alice_key)
    connected, subprotocol = await owner.connect()
    assert connected and subprotocol == "binary"
    width, height, bpp, name = await rfb_handshake(owner)
    assert width > 0 and height > 0
    assert name == f"QEMU ({vm.domain_name})", "ServerInit comes from this VM's QEMU"
    assert await framebuffer_update(owner, width, height, bpp) >= 1

    # 2. A view-only share: bob sees the screen; his keys and pointer are dropped by the relay.
    created = await sync_to_async(console_share_create)(actor=alice, via="web", vm=vm, recipient="bob", hours=1)
    token = await sync_to_async(_ticket)(bob, vm, bob_key, share=created.share)
    viewer = communicator(f"/ws/consoles/vm/{vm.pk}/screen/?ticket={token}", session_key=bob_key)
    assert (await viewer.connect())[0]
    await rfb_handshake(viewer)
    await viewer.send_to(bytes_data=struct.pack(">BBHI", 4, 1, 0, 0x61))  # KeyEvent 'a' down
    await viewer.send_to(bytes_data=struct.pack(">BBHH", 5, 1, 10, 10))  # PointerEvent click
    assert await framebuffer_update(viewer, width, height, bpp) >= 1
    bob_session = await ConsoleSession.objects.aget(user=bob)
    assert bob_session.role == "watch"

    # Revoking the share ends bob's view within a poll interval, with its own reason.
    await sync_to_async(console_share_revoke)(actor=alice, via="web", share=created.share)
    code, reason, _ = await receive_close(viewer)
    assert (code, reason) == (4403, "The share link was revoked by its owner.")
    await viewer.disconnect(code)
    bob_session = await ConsoleSession.objects.aget(user=bob)
    # ClientInit (1) + FramebufferUpdateRequest (10): the 8-byte key and 6-byte pointer never left.
    assert bob_session.bytes_to_guest == 11
    assert bob_session.close_code == 4403

    # 3. Garbage: an unknown RFB message type, and a text frame, each close with 4400.
    token = await sync_to_async(_ticket)(alice, vm, alice_key)
    junk = communicator(f"/ws/consoles/vm/{vm.pk}/screen/?ticket={token}", session_key=alice_key)
    assert (await junk.connect())[0]
    await rfb_handshake(junk)
    await junk.send_to(bytes_data=b"\x63garbage!")
    code, reason, _ = await receive_close(junk)
    assert (code, reason) == (4400, "Bad frame: unknown RFB client message type 99.")
    await junk.disconnect(code)
    token = await sync_to_async(_ticket)(alice, vm, alice_key)
    junk = communicator(f"/ws/consoles/vm/{vm.pk}/screen/?ticket={token}", session_key=alice_key)
    assert (await junk.connect())[0]
    await _recv_bytes(junk, 12)
    await junk.send_to(text_data="hello")
    code, reason, _ = await receive_close(junk)
    assert (code, reason) == (4400, "Bad frame: the screen console takes binary RFB frames only.")
    await junk.disconnect(code)

    # 4. The VM stops: the owner's open session closes with 4410.
    from vms.services import vm_force_off

    await sync_to_async(vm_force_off)(actor=alice, via="web", vm=vm)
    code, reason, _ = await receive_close(owner, timeout=20)
    assert code == 4410, reason
    assert "screen-test" in reason
    await owner.disconnect(code)

    # Audit: opened and closed, with duration and tier.
    closes = [e async for e in AuditEvent.objects.filter(action="console.close").order_by("id")]
    assert len(closes) == 4
    owner_close = closes[-1]
    assert owner_close.actor_name == "alice" and owner_close.via == "console"
    assert owner_close.data["tier"] == "channels" and owner_close.data["kind"] == "screen"
    assert owner_close.data["duration_seconds"] > 0 and owner_close.data["close_code"] == 4410
    assert "Closed the screen (vnc) of screen-test after" in owner_close.message
    assert await AuditEvent.objects.filter(action="console.open", outcome="succeeded").acount() == 4
    assert await AuditEvent.objects.filter(action="console.share.revoke").acount() == 1


async def _read_until(comm, marker: bytes, timeout: float) -> bytes:
    buf = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while marker not in buf:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"{marker!r} not seen within {timeout}s; got {buf[-500:]!r}")
        try:
            message = await comm.receive_output(timeout=remaining)
        except TimeoutError:
            raise AssertionError(f"{marker!r} not seen within {timeout}s; got {buf[-500:]!r}") from None
        assert message["type"] == "websocket.send", message
        if message.get("bytes"):
            buf += message["bytes"]
    return buf


async def test_serial_terminal_runs_uname_and_stays_private(guest_image, alice, bob, session_for, settings):
    settings.CONSOLE_POLL_SECONDS = 0.5

    @sync_to_async
    def setup():
        team = Group.objects.create(name="serial-team")
        alice.groups.add(team)
        bob.groups.add(team)
        return _create_vm(alice, guest_image, "serial-test", group=team)

    vm = await setup()
    alice_key = await sync_to_async(session_for)(alice)
    bob_key = await sync_to_async(session_for)(bob)

    token = await sync_to_async(_ticket)(alice, vm, alice_key, "serial")
    term = communicator(f"/ws/consoles/vm/{vm.pk}/serial/?ticket={token}", session_key=alice_key, binary=False)
    assert (await term.connect())[0]
    status = json.loads((await term.receive_output(timeout=10))["text"])
    assert status["type"] == "status" and status["role"] == "control" and status["read_only"] is False

    await _read_until(term, b"PORTAL GUEST READY", timeout=90)
    await term.send_to(text_data=json.dumps({"type": "resize", "cols": 120, "rows": 40}))
    await term.send_to(bytes_data=b"\r")
    await term.send_to(bytes_data=b"uname -a\r")
    out = await _read_until(term, b"Linux serial-test", timeout=20)
    assert b"x86_64" in out[out.index(b"Linux serial-test"):]

    # A second viewer (bob, same team) is refused while the owner allows one terminal at a time.
    token = await sync_to_async(_ticket)(bob, vm, bob_key, "serial")
    code, reason = await refused(communicator(f"/ws/consoles/vm/{vm.pk}/serial/?ticket={token}",
                                              session_key=bob_key, binary=False))
    assert (code, reason) == (4423, "The terminal of serial-test is in use by alice; its owner allows one "
                                    "terminal at a time.")

    # The owner lets watchers in: bob watches read-only; his keys go nowhere.
    await sync_to_async(console_settings_update)(actor=alice, via="web", vm=vm, serial_sharing="read_only")
    token = await sync_to_async(_ticket)(bob, vm, bob_key, "serial")
    watcher = communicator(f"/ws/consoles/vm/{vm.pk}/serial/?ticket={token}", session_key=bob_key, binary=False)
    assert (await watcher.connect())[0]
    status = json.loads((await watcher.receive_output(timeout=10))["text"])
    assert status["role"] == "watch" and status["read_only"] is True
    await watcher.send_to(bytes_data=b"echo bob-was-here\r")
    await term.send_to(bytes_data=b"echo watched-$((6*7))\r")
    await _read_until(watcher, b"watched-42", timeout=15)
    alice_out = await _read_until(term, b"watched-42", timeout=15)
    assert b"bob-was-here" not in alice_out

    # A malformed control message closes the watcher with 4400, not the owner.
    await watcher.send_to(text_data="{not json")
    code, reason, _ = await receive_close(watcher)
    assert (code, reason) == (4400, "Bad frame: control messages are JSON objects.")
    await watcher.disconnect(code)
    bob_session = await ConsoleSession.objects.aget(user=bob, role="watch")
    assert bob_session.bytes_to_guest == 0

    # The VM stops: the terminal closes with 4410.
    from vms.services import vm_force_off

    await sync_to_async(vm_force_off)(actor=alice, via="web", vm=vm)
    code, reason, _ = await receive_close(term, timeout=30)
    assert code == 4410, reason
    await term.disconnect(code)
    session = await ConsoleSession.objects.aget(user=alice, kind="serial")
    assert session.closed_at is not None and session.close_code == 4410 and session.bytes_from_guest > 0
    close = await AuditEvent.objects.filter(action="console.close", actor=alice).afirst()
    assert close.data["kind"] == "serial" and close.data["duration_seconds"] > 1
