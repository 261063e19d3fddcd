"""Per-user caps: open console sessions (close code 4429) and ticket requests (HTTP 429 + Retry-After)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.utils import timezone

from consoles.checks import console_limits_check
from consoles.models import ConsoleSession, ConsoleTicket
from consoles.services import console_ticket_rate
from portal.models import AuditEvent

from .conftest import communicator, refused

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("close_thread_connections")]


@pytest.fixture
def vm(test_host, alice):
    from vms.services import vm_create

    made = vm_create(actor=alice, via="web", name="web1", vcpus=1, memory_mib=128, disk_gib=1).vm
    made.refresh_from_db()
    assert made.status == "running", made.last_error
    return made


@pytest.fixture
def consoles_available(monkeypatch):
    """The test driver has no consoles; pretend it has, to reach the ticket's happy path."""
    from portal.hypervisor.driver import LibvirtDriver
    from portal.hypervisor.types import Capabilities

    monkeypatch.setattr(LibvirtDriver, "capabilities", lambda self: Capabilities(
        real_guests=True, console=True, graphics=True, acpi_shutdown=True, migration=False,
        memory_snapshots=True, live_disk_resize=False, events=True, storage_files=False))


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _open_sessions(user, vm, n: int, **fields) -> None:
    for _ in range(n):
        ConsoleSession.objects.create(user=user, vm=vm, kind="screen", tier="channels", **fields)


def test_ticket_requests_beyond_the_rate_answer_429_with_retry_after(vm, alice, bob, settings,
                                                                    consoles_available):
    from django.contrib.auth.models import Group

    settings.CONSOLE_TICKET_RATE = "3/minute"
    as_alice = _client(alice)
    for _ in range(3):
        assert as_alice.post(f"/consoles/vm/{vm.pk}/ticket/", {"kind": "screen"}).status_code == 200
    response = as_alice.post(f"/consoles/vm/{vm.pk}/ticket/", {"kind": "screen"})
    assert response.status_code == 429
    body = response.json()
    retry = body["retry_after"]
    assert 1 <= retry <= 60 and response["Retry-After"] == str(retry)
    assert body == {"code": "console_rate_limited",
                    "detail": f"Too many console requests: at most 3 a minute. Try again in {retry} s.",
                    "retry_after": retry}
    assert ConsoleTicket.objects.filter(user=alice).count() == 3
    # Another user (here on the same VM, through a team) is not slowed down by alice's storm.
    team = Group.objects.create(name="team")
    bob.groups.add(team)
    vm.group = team
    vm.save(update_fields=["group"])
    assert _client(bob).post(f"/consoles/vm/{vm.pk}/ticket/", {"kind": "screen"}).status_code == 200


def test_refused_ticket_requests_count_too(vm, alice, settings):
    """On the test driver every request is refused (no consoles): a reconnect storm still hits the cap."""
    settings.CONSOLE_TICKET_RATE = "2/minute"
    as_alice = _client(alice)
    assert [as_alice.post(f"/consoles/vm/{vm.pk}/ticket/", {"kind": "screen"}).status_code
            for _ in range(3)] == [409, 409, 429]


def test_too_many_open_consoles_refuse_the_ticket_with_429(vm, alice, settings, consoles_available):
    settings.CONSOLE_MAX_SESSIONS_PER_USER = 2
    _open_sessions(alice, vm, 2)
    _open_sessions(alice, vm, 3, closed_at=timezone.now())  # closed ones do not count
    as_alice = _client(alice)
    response = as_alice.post(f"/consoles/vm/{vm.pk}/ticket/", {"kind": "screen"})
    assert response.status_code == 429
    assert response.json() == {
        "code": "console_session_limit",
        "detail": "You have 2 consoles open, the most allowed at once: close one to open another.",
        "limit": 2, "retry_after": 20}  # the error's fields, as in every JSON error body
    assert response["Retry-After"] == "20"
    # A relay that died leaves a row that stops counting once it has not been seen for a while.
    ConsoleSession.objects.filter(user=alice).update(last_seen_at=timezone.now() - timedelta(minutes=5))
    assert as_alice.post(f"/consoles/vm/{vm.pk}/ticket/", {"kind": "screen"}).status_code == 200


async def test_a_session_over_the_cap_closes_4429_is_audited_and_opens_nothing(vm, alice, session_for,
                                                                              make_ticket, settings):
    settings.CONSOLE_MAX_SESSIONS_PER_USER = 1
    await sync_to_async(_open_sessions)(alice, vm, 1)
    key = await sync_to_async(session_for)(alice)
    token = await sync_to_async(make_ticket)(alice, vm, key, kind="serial")
    code, reason = await refused(communicator(f"/ws/consoles/vm/{vm.pk}/serial/?ticket={token}", session_key=key))
    assert (code, reason) == (4429, "You have 1 consoles open, the most allowed at once: close one to open another.")
    assert await ConsoleSession.objects.acount() == 1, "no session was opened"
    assert await ConsoleTicket.objects.filter(used_at__isnull=False).acount() == 1, "the ticket is spent"
    denied = await AuditEvent.objects.filter(action="console.open", outcome="denied").afirst()
    assert denied.data["code"] == "console_session_limit"


def test_the_rate_setting_is_parsed_and_checked(settings):
    settings.CONSOLE_TICKET_RATE = "10/hour"
    assert console_ticket_rate() == (10, 3600, "hour")
    settings.CONSOLE_TICKET_RATE = ""
    assert console_ticket_rate() is None
    assert console_limits_check(None) == []
    settings.CONSOLE_TICKET_RATE = "lots"
    with pytest.raises(ImproperlyConfigured, match="must look like 30/minute"):
        console_ticket_rate()
    assert [e.id for e in console_limits_check(None)] == ["consoles.E001"]
