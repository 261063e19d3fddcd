"""Every refusal of the console websockets closes with its own code and reason, before any relaying.

These run on libvirt's test driver: tickets are written as rows, so no real guest is needed.
(Refusals that need a live session -- garbage frames, revocation mid-session, a VM that stops --
are in test_relay.py against real QEMU.)
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group
from django.utils import timezone

from consoles.models import ConsoleSession, ConsoleTicket
from portal.models import AuditEvent

from .conftest import communicator, refused

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("close_thread_connections")]


@pytest.fixture
def vms(test_host, alice):
    from vms.services import vm_create

    made = [vm_create(actor=alice, via="web", name=n, vcpus=1, memory_mib=128, disk_gib=1).vm
            for n in ("vm-a", "vm-b")]
    for vm in made:
        vm.refresh_from_db()
        assert vm.status == "running", vm.last_error
    return made


def screen(vm, ticket: str | None = None) -> str:
    return f"/ws/consoles/vm/{vm.pk}/screen/" + (f"?ticket={ticket}" if ticket else "")


async def test_missing_ticket_closes_4401(vms, alice, session_for):
    code, reason = await refused(communicator(screen(vms[0]), session_key=await sync_to_async(session_for)(alice)))
    assert (code, reason) == (4401, "No console ticket: open the console from the VM's page.")


async def test_unknown_ticket_closes_4401(vms, alice, session_for):
    key = await sync_to_async(session_for)(alice)
    code, reason = await refused(communicator(screen(vms[0], "not-a-real-ticket"), session_key=key))
    assert (code, reason) == (4401, "Unknown console ticket.")


async def test_foreign_ticket_from_another_session_closes_4403_and_is_audited(vms, alice, bob, session_for,
                                                                            make_ticket):
    alice_key = await sync_to_async(session_for)(alice)
    bob_key = await sync_to_async(session_for)(bob)
    token = await sync_to_async(make_ticket)(alice, vms[0], alice_key)
    code, reason = await refused(communicator(screen(vms[0], token), session_key=bob_key))
    assert (code, reason) == (4403, "This ticket was issued to another browser session.")
    # The ticket was not spent by the thief: its owner can still use it (it is refused later for
    # other reasons on this fake host, but not as "already used").
    assert await ConsoleTicket.objects.filter(used_at__isnull=True).acount() == 1
    denied = await AuditEvent.objects.filter(action="console.open", outcome="denied").afirst()
    assert denied.message == "This ticket was issued to another browser session."
    assert denied.actor_name == "alice"


async def test_expired_ticket_closes_4408(vms, alice, session_for, make_ticket):
    key = await sync_to_async(session_for)(alice)
    token = await sync_to_async(make_ticket)(alice, vms[0], key, expires_at=timezone.now() - timedelta(seconds=1))
    code, reason = await refused(communicator(screen(vms[0], token), session_key=key))
    assert (code, reason) == (4408, "This console ticket expired: reconnect from the page.")


async def test_reused_ticket_closes_4409(vms, alice, session_for, make_ticket):
    key = await sync_to_async(session_for)(alice)
    token = await sync_to_async(make_ticket)(alice, vms[0], key, used_at=timezone.now())
    code, reason = await refused(communicator(screen(vms[0], token), session_key=key))
    assert (code, reason) == (4409, "This console ticket was already used: reconnect from the page.")


async def test_a_ticket_is_spent_by_its_first_use_even_when_that_use_is_refused(vms, alice, session_for,
                                                                             make_ticket):
    """First use: the VM is stopped (4410). Second use of the same ticket: already used (4409)."""
    from vms.services import vm_force_off

    await sync_to_async(vm_force_off)(actor=alice, via="web", vm=vms[0])
    key = await sync_to_async(session_for)(alice)
    token = await sync_to_async(make_ticket)(alice, vms[0], key)
    assert (await refused(communicator(screen(vms[0], token), session_key=key)))[0] == 4410
    assert (await refused(communicator(screen(vms[0], token), session_key=key)))[0] == 4409


async def test_wrong_origin_is_refused(vms, alice, session_for, make_ticket):
    key = await sync_to_async(session_for)(alice)
    # A foreign site: the project-wide AllowedHostsOriginValidator rejects the handshake itself.
    token = await sync_to_async(make_ticket)(alice, vms[0], key)
    comm = communicator(screen(vms[0], token), session_key=key, origin="http://evil.example")
    connected, _ = await comm.connect()
    assert not connected
    # An allowed host on another port (another app on the same machine): the console's own check.
    code, reason = await refused(communicator(screen(vms[0], token), session_key=key,
                                              origin="http://localhost:9999"))
    assert (code, reason) == (4403, "Origin 'http://localhost:9999' may not open consoles.")
    # Refused on Origin before the ticket is even looked at: it is still unused.
    assert await ConsoleTicket.objects.filter(used_at__isnull=True).acount() == 1
    # No Origin header at all (not a browser): refused at the handshake too.
    connected, _ = await communicator(screen(vms[0], token), session_key=key, origin=None).connect()
    assert not connected


async def test_ticket_for_vm_a_used_on_vm_b_closes_4403(vms, alice, session_for, make_ticket):
    key = await sync_to_async(session_for)(alice)
    token = await sync_to_async(make_ticket)(alice, vms[0], key)
    code, reason = await refused(communicator(screen(vms[1], token), session_key=key))
    assert (code, reason) == (4403, "This ticket is for another console.")


async def test_screen_ticket_on_the_serial_console_closes_4403(vms, alice, session_for, make_ticket):
    key = await sync_to_async(session_for)(alice)
    token = await sync_to_async(make_ticket)(alice, vms[0], key, kind="screen")
    code, reason = await refused(communicator(f"/ws/consoles/vm/{vms[0].pk}/serial/?ticket={token}",
                                              session_key=key))
    assert (code, reason) == (4403, "This ticket is for another console.")


async def test_stopped_vm_closes_4410(vms, alice, session_for, make_ticket):
    from vms.services import vm_force_off

    await sync_to_async(vm_force_off)(actor=alice, via="web", vm=vms[0])
    key = await sync_to_async(session_for)(alice)
    token = await sync_to_async(make_ticket)(alice, vms[0], key)
    code, reason = await refused(communicator(screen(vms[0], token), session_key=key))
    assert (code, reason) == (4410, "vm-a is stopped: the console is closed.")


async def test_access_revoked_after_the_ticket_was_issued_closes_4403(vms, alice, bob, session_for, make_ticket):
    """Bob got a ticket as a member of the VM's team, then was removed from the team."""
    from vms.models import VM

    @sync_to_async
    def share_with_bob_then_remove():
        team = Group.objects.create(name="team")
        alice.groups.add(team)
        bob.groups.add(team)
        VM.objects.filter(pk=vms[0].pk).update(group=team)
        key = session_for(bob)
        token = make_ticket(bob, vms[0], key)
        bob.groups.remove(team)
        return key, token

    key, token = await share_with_bob_then_remove()
    code, reason = await refused(communicator(screen(vms[0], token), session_key=key))
    assert (code, reason) == (4403, "You no longer have access to this VM.")


async def test_deactivated_or_signed_out_user_closes_4403(vms, alice, session_for, make_ticket):
    from django.contrib.sessions.models import Session

    key = await sync_to_async(session_for)(alice)
    token = await sync_to_async(make_ticket)(alice, vms[0], key)
    await Session.objects.filter(session_key=key).adelete()  # signed out in another tab
    code, reason = await refused(communicator(screen(vms[0], token), session_key=key))
    assert code == 4403

    key = await sync_to_async(session_for)(alice)
    token = await sync_to_async(make_ticket)(alice, vms[0], key)
    alice.is_active = False
    await alice.asave(update_fields=["is_active"])
    code, reason = await refused(communicator(screen(vms[0], token), session_key=key))
    assert code == 4403


async def test_refusals_open_no_session(vms, alice, session_for, make_ticket):
    key = await sync_to_async(session_for)(alice)
    token = await sync_to_async(make_ticket)(alice, vms[0], key, expires_at=timezone.now() - timedelta(seconds=5))
    await refused(communicator(screen(vms[0], token), session_key=key))
    assert await ConsoleSession.objects.acount() == 0
