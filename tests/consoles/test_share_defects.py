"""A share link of a deleted (or deleting) VM has ended: a 404 in plain words, never the screen page."""

from __future__ import annotations

import pytest
from django.test import Client

from consoles.exceptions import ConsoleForbidden
from consoles.models import ConsoleShare
from consoles.services import console_share_create, console_ticket_issue
from portal.exceptions import NotFound

pytestmark = pytest.mark.django_db(transaction=True)

ENDED = "This share link has ended: the VM it showed was deleted."


@pytest.fixture
def shared(test_host, alice, bob):
    """(vm, share, token, bob's client): alice shares web1's screen with bob."""
    from vms.services import vm_create

    vm = vm_create(actor=alice, via="web", name="web1", vcpus=1, memory_mib=128, disk_gib=1).vm
    created = console_share_create(actor=alice, via="web", vm=vm, recipient="bob", hours=2)
    viewer = Client()
    viewer.force_login(bob)
    return vm, created.share, created.token, viewer


def test_a_share_of_a_deleted_vm_answers_404_in_plain_words_and_has_ended(shared, alice):
    from vms.services import vm_delete

    vm, share, token, viewer = shared
    assert viewer.get(f"/consoles/share/{token}/").status_code == 200
    vm_delete(actor=alice, via="web", vm=vm)
    vm.refresh_from_db()
    assert vm.status == "deleted"

    page = viewer.get(f"/consoles/share/{token}/")
    assert page.status_code == 404
    html = page.content.decode()
    assert ENDED in html and "Screen of web1" not in html
    assert "no longer has access" not in html
    ticket = viewer.post(f"/consoles/share/{token}/ticket/")
    assert ticket.status_code == 404 and ticket.json() == {"code": "not_found", "detail": ENDED}
    share = ConsoleShare.objects.select_related("vm").get(pk=share.pk)
    assert share.state == "ended" and not share.is_active


def test_a_share_of_a_vm_being_deleted_has_ended_too(shared, bob):
    from vms.models import VM

    vm, share, token, viewer = shared
    VM.objects.filter(pk=vm.pk).update(status="deleting")
    page = viewer.get(f"/consoles/share/{token}/")
    assert page.status_code == 404 and ENDED in page.content.decode()
    share.refresh_from_db()
    share.vm.refresh_from_db()
    with pytest.raises(NotFound, match="has ended"):
        from consoles.services import console_share_resolve

        console_share_resolve(user=bob, token=token)
    # A ticket through the share row itself (the relays' path) names the same reason.
    with pytest.raises(ConsoleForbidden, match="has ended"):
        console_ticket_issue(actor=bob, via="web", vm=vm.pk, kind="screen", session_key="k", share=share)


def test_a_missing_share_gets_the_same_plain_404_page(shared):
    _, _, _, viewer = shared
    page = viewer.get("/consoles/share/forged-token/")
    assert page.status_code == 404
    assert "This share link does not exist or is not for you." in page.content.decode()


def test_the_admin_shows_an_ended_share(shared, admin_user):
    from vms.models import VM

    vm, _, _, _ = shared
    VM.objects.filter(pk=vm.pk).update(status="deleted")
    client = Client()
    client.force_login(admin_user)
    page = client.get("/admin/consoles/consoleshare/")
    assert page.status_code == 200 and "Ended" in page.content.decode()
