"""One-time console links belong to consoles now: same table, same rules, old URLs still work."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from consoles.exceptions import ConsoleRateLimited
from consoles.models import ConsoleLink
from consoles.services import console_link_create, console_link_redeem
from portal.exceptions import InvalidState, NotFound, PermissionDenied, ValidationFailed
from portal.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def vm(test_host, alice):
    from vms.services import vm_create

    return vm_create(actor=alice, via="web", name="web1", vcpus=1, memory_mib=128, disk_gib=1).vm


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_model_lives_in_consoles_on_its_old_table():
    assert ConsoleLink._meta.app_label == "consoles"
    assert ConsoleLink._meta.db_table == "chatops_consolelink"
    import chatops.models

    assert not hasattr(chatops.models, "ConsoleLink")


def test_a_link_is_bound_to_its_user_single_use_and_short_lived(vm, alice, bob, settings):
    settings.CONSOLE_LINK_TTL_SECONDS = 300
    issued = console_link_create(actor=alice, via="api", vm=vm, kind="terminal")
    assert issued.path == f"/consoles/link/{issued.token}/"
    assert timedelta(seconds=295) < issued.expires_at - timezone.now() <= timedelta(seconds=300)
    row = ConsoleLink.objects.get()
    assert row.token_hash == hashlib.sha256(issued.token.encode()).hexdigest(), "only the hash is stored"
    event = AuditEvent.objects.get(action="console.link")
    assert event.via == "api" and event.message == "One-time link to the terminal of web1 (valid 5m 0s)"

    with pytest.raises(PermissionDenied, match="made for another portal account"):
        console_link_redeem(actor=bob, token=issued.token)
    assert console_link_redeem(actor=alice, token=issued.token).kind == "terminal"
    with pytest.raises(InvalidState, match="already used"):
        console_link_redeem(actor=alice, token=issued.token)

    settings.CONSOLE_LINK_TTL_SECONDS = 0
    expired = console_link_create(actor=alice, via="cli", vm=vm)
    with pytest.raises(InvalidState, match="has expired"):
        console_link_redeem(actor=alice, token=expired.token)
    with pytest.raises(NotFound, match="not valid"):
        console_link_redeem(actor=alice, token="forged")


def test_links_need_a_visible_vm_and_a_known_kind(vm, alice, bob):
    with pytest.raises(NotFound):
        console_link_create(actor=bob, via="api", vm=vm)
    with pytest.raises(ValidationFailed, match="Unknown console kind 'serial' \\(screen or terminal\\)"):
        console_link_create(actor=alice, via="api", vm=vm, kind="serial")
    assert not ConsoleLink.objects.exists()


def test_links_count_against_the_ticket_rate(vm, alice, settings):
    settings.CONSOLE_TICKET_RATE = "2/minute"
    console_link_create(actor=alice, via="slack", vm=vm)
    console_link_create(actor=alice, via="slack", vm=vm)
    with pytest.raises(ConsoleRateLimited, match="at most 2 a minute"):
        console_link_create(actor=alice, via="slack", vm=vm)


def test_the_link_page_spends_the_link_and_opens_the_console(vm, alice, bob):
    issued = console_link_create(actor=alice, via="api", vm=vm, kind="screen")
    refused = _client(bob).get(issued.path)
    assert refused.status_code == 403 and b"made for another portal account" in refused.content
    as_alice = _client(alice)
    opened = as_alice.get(issued.path)
    assert opened.status_code == 302 and opened["Location"] == f"/consoles/vm/{vm.pk}/screen/"
    again = as_alice.get(issued.path)
    assert again.status_code == 410 and b"already used" in again.content


def test_links_handed_out_under_the_old_slack_path_still_work(vm, alice):
    issued = console_link_create(actor=alice, via="slack", vm=vm, kind="terminal")
    as_alice = _client(alice)
    moved = as_alice.get(f"/slack/console/{issued.token}/")
    assert moved.status_code == 302 and moved["Location"] == issued.path
    opened = as_alice.get(f"/slack/console/{issued.token}/", follow=True)
    assert opened.redirect_chain[-1][0] == f"/consoles/vm/{vm.pk}/terminal/"
    assert ConsoleLink.objects.get().used_at is not None


def test_rows_written_before_the_move_survive_the_migrations(vm, alice):
    """Migrate back to chatops owning the model, write a row there, migrate forward: the row is a ConsoleLink."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before = [("chatops", "0002_console_links"), ("consoles", "0001_initial")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old_apps = executor.loader.project_state(before).apps
    token = "token-from-before-the-move"
    old_apps.get_model("chatops", "ConsoleLink").objects.create(
        token_hash=hashlib.sha256(token.encode()).hexdigest(), user_id=alice.pk, vm_id=vm.pk, kind="terminal",
        expires_at=timezone.now() + timedelta(minutes=5))

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    link = console_link_redeem(actor=alice, token=token)
    assert (link.vm_id, link.kind) == (vm.pk, "terminal")


def test_no_screen_link_for_a_vm_on_a_host_without_a_display_address(vm, alice):
    from cluster.models import Host
    from consoles.exceptions import ConsoleUnavailable

    # The VM's host is another machine whose administrator has not set a display address yet.
    Host.objects.filter(pk=vm.host_id).update(uri="qemu+tcp://10.0.0.2/system", display_address="")
    vm.refresh_from_db()
    with pytest.raises(ConsoleUnavailable, match="an administrator must set its display address"):
        console_link_create(actor=alice, via="api", vm=vm, kind="screen")
    assert not ConsoleLink.objects.exists()
    assert console_link_create(actor=alice, via="api", vm=vm, kind="terminal").kind == "terminal"  # serial works
    response = _client(alice).post(f"/api/vms/{vm.pk}/console/", {"kind": "screen"}, content_type="application/json")
    assert response.status_code == 409 and "display address" in response.json()["detail"]
