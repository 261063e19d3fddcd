"""Tickets, share links and the owner's terminal choice through the services and the web pages."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from consoles.exceptions import ConsoleUnavailable
from consoles.models import ConsoleSettings, ConsoleShare, ConsoleTicket
from consoles.services import (
    console_origin_allowed,
    console_settings_update,
    console_share_create,
    console_share_resolve,
    console_share_revoke,
    console_ticket_issue,
)
from portal.exceptions import NotFound, PermissionDenied, ValidationFailed
from portal.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def vm(test_host, alice):
    from vms.services import vm_create

    made = vm_create(actor=alice, via="web", name="web1", vcpus=1, memory_mib=128, disk_gib=1).vm
    made.refresh_from_db()
    assert made.status == "running", made.last_error
    return made


@pytest.fixture
def as_alice(alice):
    client = Client()
    client.force_login(alice)
    return client


def test_each_vm_gets_a_private_8_character_vnc_password_in_its_domain_xml(vm):
    from portal.hypervisor import get_driver

    conf = ConsoleSettings.objects.get(vm=vm)
    assert len(conf.vnc_password) == 8 and conf.vnc_password.isalnum()
    xml = get_driver(vm.host.uri).domain_xml(str(vm.uuid), inactive=True)
    assert "passwd=" not in xml, "libvirt never shows the password without the secure flag"
    assert conf.serial_sharing == "refuse", "serial terminals are private by default"


def test_tickets_need_a_visible_running_vm_on_a_real_hypervisor(vm, alice, bob):
    with pytest.raises(NotFound):
        console_ticket_issue(actor=bob, via="web", vm=vm, kind="screen", session_key="k")
    with pytest.raises(ValidationFailed, match="Unknown console kind"):
        console_ticket_issue(actor=alice, via="web", vm=vm, kind="ssh", session_key="k")
    with pytest.raises(ConsoleUnavailable, match="Consoles are not available for VMs on testhost"):
        console_ticket_issue(actor=alice, via="web", vm=vm, kind="screen", session_key="k")
    from vms.services import vm_force_off

    vm_force_off(actor=alice, via="web", vm=vm)
    with pytest.raises(PermissionDenied):  # no session: refused before anything else
        console_ticket_issue(actor=alice, via="web", vm=vm, kind="screen", session_key="")
    with pytest.raises(Exception, match="web1 is stopped: start it to use the console."):
        console_ticket_issue(actor=alice, via="web", vm=vm, kind="screen", session_key="k")
    assert not ConsoleTicket.objects.exists()


def test_ticket_endpoint_answers_json_errors_never_500(as_alice, vm, client, bob):
    response = as_alice.post(f"/consoles/vm/{vm.pk}/ticket/", {"kind": "screen"})
    assert response.status_code == 409
    assert response.json() == {"code": "console_unavailable",
                               "detail": "Consoles are not available for VMs on testhost: its hypervisor "
                                         "driver has none."}
    response = as_alice.post(f"/consoles/vm/{vm.pk}/ticket/", {"kind": "nope"})
    assert response.status_code == 400 and response.json()["code"] == "invalid"
    response = as_alice.post("/consoles/vm/99999/ticket/", {"kind": "screen"})
    assert response.status_code == 404 and response.json()["detail"] == "VM 99999 not found."
    assert as_alice.get(f"/consoles/vm/{vm.pk}/ticket/").status_code == 405
    # Anonymous: sent to the login page, no ticket.
    assert client.post(f"/consoles/vm/{vm.pk}/ticket/", {"kind": "screen"}).status_code == 302


def test_ticket_endpoint_issues_a_short_lived_single_use_ticket(as_alice, vm, monkeypatch, settings):
    from portal.hypervisor.driver import LibvirtDriver
    from portal.hypervisor.types import Capabilities

    # The test driver has no consoles; pretend it has to see the happy path of the endpoint.
    monkeypatch.setattr(LibvirtDriver, "capabilities", lambda self: Capabilities(
        real_guests=True, console=True, graphics=True, acpi_shutdown=True, migration=False,
        memory_snapshots=True, live_disk_resize=False, events=True, storage_files=False))
    settings.CONSOLE_TICKET_SECONDS = 30
    response = as_alice.post(f"/consoles/vm/{vm.pk}/ticket/", {"kind": "serial"})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    data = response.json()
    assert data["url"] == f"/ws/consoles/vm/{vm.pk}/serial/?ticket={data['ticket']}"
    assert data["tier"] == "channels" and data["expires_in"] == 30 and data["view_only"] is False
    ticket = ConsoleTicket.objects.get()
    assert ticket.token_hash != data["ticket"], "only the hash is stored"
    assert ticket.session_key == as_alice.session.session_key
    assert timedelta(seconds=25) < ticket.expires_at - timezone.now() <= timedelta(seconds=30)

    settings.CONSOLE_PROXY_URL = "ws://proxy.example:6090"
    data = as_alice.post(f"/consoles/vm/{vm.pk}/ticket/", {"kind": "screen"}).json()
    assert data["tier"] == "websockify"
    assert data["url"] == f"ws://proxy.example:6090/vm/{vm.pk}/screen/?ticket={data['ticket']}"
    data = as_alice.post(f"/consoles/vm/{vm.pk}/ticket/", {"kind": "screen", "tier": "portal"}).json()
    assert data["tier"] == "channels"
    data = as_alice.post(f"/consoles/vm/{vm.pk}/ticket/", {"kind": "serial"}).json()
    assert data["tier"] == "channels", "the serial console is always on the portal's origin"


def test_console_pages_render_for_the_owner_and_hide_others_vms(as_alice, vm, bob):
    page = as_alice.get(f"/consoles/vm/{vm.pk}/screen/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Screen of web1" in html and f'data-ticket-url="/consoles/vm/{vm.pk}/ticket/"' in html
    assert "consoles/screen.js" in html and "Ctrl-Alt-Del" in html and "Share the screen, view-only" in html
    page = as_alice.get(f"/consoles/vm/{vm.pk}/terminal/")
    assert page.status_code == 200 and "consoles/terminal.js" in page.content.decode()
    assert "When someone else opens this terminal" in page.content.decode()
    other = Client()
    other.force_login(bob)
    assert other.get(f"/consoles/vm/{vm.pk}/screen/").status_code == 404
    assert other.get(f"/consoles/vm/{vm.pk}/terminal/").status_code == 404


def test_share_links_are_created_shown_once_used_by_the_recipient_only_and_revoked(as_alice, vm, alice, bob,
                                                                                   make_user):
    response = as_alice.post(f"/consoles/vm/{vm.pk}/shares/", {"recipient": "bob", "hours": "2", "note": "demo"})
    assert response.status_code == 302
    page = as_alice.get(response["Location"]).content.decode()
    share = ConsoleShare.objects.get()
    assert "Link for bob (shown only once)" in page
    link = page.split('data-share-link')[0].rsplit('value="', 1)[1].split('"')[0]
    token = link.rsplit("/share/", 1)[1].strip("/")
    assert "Link for bob" not in as_alice.get(f"/consoles/vm/{vm.pk}/screen/").content.decode()
    assert share.recipient == bob and share.is_active and share.note == "demo"
    assert timedelta(hours=1, minutes=59) < share.expires_at - timezone.now() <= timedelta(hours=2)
    event = AuditEvent.objects.get(action="console.share.create")
    assert event.message == "Shared the screen of web1 with bob (view-only, 2 h)"

    viewer = Client()
    viewer.force_login(bob)
    page = viewer.get(f"/consoles/share/{token}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-view-only="1"' in html and "View-only" in html and "Ctrl-Alt-Del" not in html
    assert "Share the screen" not in html
    carol = make_user("carol")
    other = Client()
    other.force_login(carol)
    assert other.get(f"/consoles/share/{token}/").status_code == 404
    assert other.post(f"/consoles/share/{token}/ticket/").json()["detail"] == \
        "This share link does not exist or is not for you."
    with pytest.raises(NotFound):
        console_share_resolve(user=bob, token="forged")

    response = as_alice.post(f"/consoles/shares/{share.pk}/revoke/")
    assert response.status_code == 302
    share.refresh_from_db()
    assert share.state == "revoked" and share.revoked_by == alice
    assert AuditEvent.objects.filter(action="console.share.revoke").count() == 1
    # A revoked link yields no ticket.
    response = viewer.post(f"/consoles/share/{token}/ticket/")
    assert response.status_code == 403 and response.json()["detail"] == "The share link was revoked by its owner."


def test_share_validation_and_permissions(vm, alice, bob, make_user):
    with pytest.raises(ValidationFailed) as err:
        console_share_create(actor=alice, via="web", vm=vm, recipient="", hours=999, note="x" * 300)
    assert set(err.value.errors) == {"recipient", "hours", "note"}
    with pytest.raises(ValidationFailed, match="No active portal user named 'nobody'"):
        console_share_create(actor=alice, via="web", vm=vm, recipient="nobody")
    with pytest.raises(ValidationFailed, match="You can already see your own console."):
        console_share_create(actor=alice, via="web", vm=vm, recipient="alice")
    with pytest.raises(NotFound):
        console_share_create(actor=bob, via="web", vm=vm, recipient="alice")
    created = console_share_create(actor=alice, via="web", vm=vm, recipient="bob", hours=1)
    with pytest.raises(NotFound):
        console_share_revoke(actor=bob, via="web", share=created.share)
    ConsoleShare.objects.filter(pk=created.share.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    created.share.refresh_from_db()
    assert created.share.state == "expired"


def test_only_the_owner_chooses_whether_others_may_watch_the_terminal(vm, alice, bob, as_alice):
    from django.contrib.auth.models import Group

    from vms.models import VM

    team = Group.objects.create(name="t")
    alice.groups.add(team)
    bob.groups.add(team)
    VM.objects.filter(pk=vm.pk).update(group=team)
    with pytest.raises(PermissionDenied, match="Only the owner of web1"):
        console_settings_update(actor=bob, via="web", vm=vm, serial_sharing="read_only")
    with pytest.raises(ValidationFailed):
        console_settings_update(actor=alice, via="web", vm=vm, serial_sharing="everyone")
    response = as_alice.post(f"/consoles/vm/{vm.pk}/settings/", {"serial_sharing": "read_only"})
    assert response.status_code == 302
    assert ConsoleSettings.objects.get(vm=vm).serial_sharing == "read_only"
    assert AuditEvent.objects.get(action="console.settings").message == \
        "Second terminal viewers of web1: let a second viewer watch, read-only"


@pytest.mark.parametrize(("origin", "host", "allowed"), [
    ("http://testserver", "testserver", True),
    ("http://127.0.0.1:8000", "proxy.example:6090", True),  # in CONSOLE_ALLOWED_ORIGINS (CSRF origins)
    ("http://evil.example", "testserver", False),
    ("http://testserver:81", "testserver", False),
    ("null", "testserver", False),
    (None, "testserver", False),
])
def test_origin_rule(origin, host, allowed):
    assert console_origin_allowed(origin=origin, host=host, scheme="http") is allowed


def test_the_vnc_password_is_not_shown_in_the_admin(admin_user, vm):
    client = Client()
    client.force_login(admin_user)
    page = client.get(f"/admin/consoles/consolesettings/{ConsoleSettings.objects.get(vm=vm).pk}/change/")
    assert page.status_code == 200
    assert ConsoleSettings.objects.get(vm=vm).vnc_password not in page.content.decode()
    assert client.get("/admin/consoles/consolesession/").status_code == 200
    assert client.get("/admin/consoles/consoleshare/").status_code == 200
