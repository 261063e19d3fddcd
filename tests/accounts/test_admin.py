"""SSH keys in the Django admin: added through the service (the form runs the same validation),
deleted through it, listed and searched; and the keys of a user on their user page."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from accounts.models import SSHKey
from accounts.services import sshkey_add
from portal.models import AuditEvent

from .conftest import ed25519_line

pytestmark = pytest.mark.django_db

ADD = "/admin/accounts/sshkey/add/"
CHANGELIST = "/admin/accounts/sshkey/"


@pytest.fixture
def admin_client_(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def test_add_through_the_admin_validates_like_every_door(admin_client_, alice, admin_user):
    page = admin_client_.get(f"{ADD}?user={alice.pk}")
    assert page.status_code == 200 and f'value="{alice.pk}" selected' in page.content.decode()
    refused = admin_client_.post(ADD, {"user": alice.pk, "name": "", "public_key": f'command="id" {ed25519_line()}'})
    assert refused.status_code == 200 and "Paste only the key itself" in refused.content.decode()
    assert not SSHKey.objects.exists()

    line = ed25519_line("ops@bastion")
    added = admin_client_.post(ADD, {"user": alice.pk, "name": "", "public_key": line})
    assert added.status_code == 302, added.content.decode()[:2000]
    key = SSHKey.objects.get()
    assert (key.user, key.name, key.public_key, key.created_via) == (alice, "ops@bastion", line, "admin")
    event = AuditEvent.objects.get(action="sshkey.add")
    assert (event.actor, event.via) == (admin_user, "admin")

    duplicate = admin_client_.post(ADD, {"user": alice.pk, "name": "again", "public_key": line}, follow=True)
    assert "Not saved: This key is already on the account" in duplicate.content.decode()
    assert SSHKey.objects.count() == 1


def test_changelist_columns_search_and_delete_through_the_service(admin_client_, alice, bob):
    a = sshkey_add(actor=alice, via="web", public_key=ed25519_line(), name="alice-laptop")
    b = sshkey_add(actor=bob, via="api", public_key=ed25519_line(), name="bob-laptop")
    page = admin_client_.get(CHANGELIST).content.decode()
    assert "alice-laptop" in page and "ED25519 256" in page and a.fingerprint in page and "REST API" in page
    found = admin_client_.get(CHANGELIST, {"q": b.fingerprint}).content.decode()
    assert "bob-laptop" in found and "alice-laptop" not in found
    assert "alice-laptop" in admin_client_.get(CHANGELIST, {"q": "alice"}).content.decode()
    selected = {"action": "delete_selected", "_selected_action": [a.pk, b.pk]}
    confirm = admin_client_.post(CHANGELIST, selected)  # Django's confirmation page first
    assert "Are you sure" in confirm.content.decode() and SSHKey.objects.count() == 2
    done = admin_client_.post(CHANGELIST, {**selected, "post": "yes"}, follow=True)
    assert "Successfully deleted 2 SSH keys" in done.content.decode()
    assert not SSHKey.objects.exists()
    assert AuditEvent.objects.filter(action="sshkey.delete", via="admin").count() == 2
    a = sshkey_add(actor=alice, via="web", public_key=ed25519_line(), name="again")
    admin_client_.post(f"{CHANGELIST}{a.pk}/delete/", {"post": "yes"})
    assert not SSHKey.objects.exists() and AuditEvent.objects.filter(action="sshkey.delete").count() == 3


def test_the_change_page_only_shows_the_key(admin_client_, alice):
    key = sshkey_add(actor=alice, via="web", public_key=ed25519_line(), name="laptop")
    page = admin_client_.get(f"{CHANGELIST}{key.pk}/change/").content.decode()
    assert key.public_key in page and 'name="_save"' not in page
    admin_client_.post(f"{CHANGELIST}{key.pk}/change/", {"name": "renamed", "public_key": ed25519_line()})
    key.refresh_from_db()
    assert key.name == "laptop"


def test_the_user_page_shows_their_keys(admin_client_, alice):
    key = sshkey_add(actor=alice, via="web", public_key=ed25519_line(), name="laptop")
    page = admin_client_.get(f"/admin/auth/user/{alice.pk}/change/").content.decode()
    assert "SSH keys" in page and "laptop" in page and key.fingerprint in page
    assert re.search(rf'href="/admin/accounts/sshkey/add/\?user={alice.pk}">Add an SSH key for alice', page)
