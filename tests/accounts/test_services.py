"""accounts.services and selectors: who may add and delete keys, the limits, the audit, authorized_keys."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser

from accounts.models import SSHKey
from accounts.selectors import authorized_keys, sshkey_get, sshkey_list
from accounts.services import sshkey_add, sshkey_delete
from portal.exceptions import Conflict, NotFound, PermissionDenied, ValidationFailed
from portal.models import AuditEvent

from .conftest import ed25519_line

pytestmark = pytest.mark.django_db


def test_add_stores_the_normalized_key_and_audits(alice):
    line = ed25519_line("alice@laptop")
    key = sshkey_add(actor=alice, via="web", public_key=f" {line}\n")
    assert (key.user, key.name, key.public_key, key.key_type, key.bits, key.created_via) == (
        alice, "alice@laptop", line, "ssh-ed25519", 256, "web")
    assert key.fingerprint.startswith("SHA256:") and key.label == "ED25519 256"
    event = AuditEvent.objects.get(action="sshkey.add")
    assert (event.actor, event.via, event.target_type, event.target_id) == (alice, "web", "sshkey", str(key.pk))
    assert event.message == f"Added SSH key alice@laptop (ED25519 256, {key.fingerprint})"
    assert event.data["fingerprint"] == key.fingerprint and event.data["owner"] == "alice"


def test_the_same_key_twice_is_refused_even_with_another_comment(alice, bob):
    line = ed25519_line("first")
    sshkey_add(actor=alice, via="web", public_key=line, name="laptop")
    again = " ".join(line.split()[:2]) + " another comment"
    with pytest.raises(ValidationFailed) as exc:
        sshkey_add(actor=alice, via="api", public_key=again, name="other")
    assert exc.value.errors == {"public_key": ["This key is already on the account, named 'laptop'."]}
    sshkey_add(actor=bob, via="web", public_key=line)  # another user may have the same public key
    assert SSHKey.objects.count() == 2


def test_names_are_unique_per_user_and_default_names_step_aside(alice):
    sshkey_add(actor=alice, via="web", public_key=ed25519_line("laptop"))
    second = sshkey_add(actor=alice, via="web", public_key=ed25519_line("laptop"))  # same comment, new key
    third = sshkey_add(actor=alice, via="web", public_key=ed25519_line("laptop"))
    assert (second.name, third.name) == ("laptop (2)", "laptop (3)")
    with pytest.raises(ValidationFailed) as exc:
        sshkey_add(actor=alice, via="web", public_key=ed25519_line(), name="laptop")
    assert exc.value.errors == {"name": ["There is already a key named 'laptop': choose another name."]}


def test_a_user_keeps_at_most_the_configured_number_of_keys(alice, settings):
    settings.SSH_KEYS_PER_USER = 2
    for _ in range(2):
        sshkey_add(actor=alice, via="web", public_key=ed25519_line())
    with pytest.raises(Conflict) as exc:
        sshkey_add(actor=alice, via="web", public_key=ed25519_line())
    assert exc.value.message == ("The account has 2 SSH keys, the most allowed (2). "
                                 "Delete one you no longer use first.")
    assert SSHKey.objects.filter(user=alice).count() == 2


def test_an_invalid_key_writes_nothing(alice, rsa_1024_pub):
    with pytest.raises(ValidationFailed):
        sshkey_add(actor=alice, via="web", public_key=rsa_1024_pub)
    assert not SSHKey.objects.exists() and not AuditEvent.objects.filter(action="sshkey.add").exists()


def test_only_signed_in_users_add_keys(alice):
    for nobody in (None, AnonymousUser()):
        with pytest.raises(PermissionDenied):
            sshkey_add(actor=nobody, via="api", public_key=ed25519_line())
    alice.is_active = False
    with pytest.raises(PermissionDenied):
        sshkey_add(actor=alice, via="api", public_key=ed25519_line())


def test_keys_for_another_user_only_by_administrators(alice, bob, admin_user):
    with pytest.raises(PermissionDenied):
        sshkey_add(actor=bob, via="api", public_key=ed25519_line(), user=alice)
    key = sshkey_add(actor=admin_user, via="admin", public_key=ed25519_line("ops"), user=alice)
    assert key.user == alice
    event = AuditEvent.objects.get(action="sshkey.add")
    assert event.actor == admin_user and "for alice" in event.message


def test_others_keys_look_missing_and_cannot_be_deleted(alice, bob):
    key = sshkey_add(actor=alice, via="web", public_key=ed25519_line())
    with pytest.raises(NotFound):
        sshkey_get(bob, key.pk)
    with pytest.raises(NotFound):
        sshkey_delete(actor=bob, via="web", key=key.pk)
    with pytest.raises(NotFound):
        sshkey_delete(actor=bob, via="web", key=key)
    assert SSHKey.objects.filter(pk=key.pk).exists()
    for bad in ("nope", None, 10**6):
        with pytest.raises(NotFound):
            sshkey_get(alice, bad)


def test_owners_delete_their_keys_and_administrators_anyones(alice, admin_user):
    mine = sshkey_add(actor=alice, via="web", public_key=ed25519_line("one"))
    other = sshkey_add(actor=alice, via="web", public_key=ed25519_line("two"))
    removed = sshkey_delete(actor=alice, via="web", key=mine.pk)
    assert removed.name == "one" and not SSHKey.objects.filter(name="one").exists()
    assert sshkey_get(admin_user, other.pk) == other  # administrators may look any key up
    sshkey_delete(actor=admin_user, via="admin", key=other)
    assert not SSHKey.objects.exists()
    deletes = AuditEvent.objects.filter(action="sshkey.delete").order_by("id")
    assert [(e.actor, e.via) for e in deletes] == [(alice, "web"), (admin_user, "admin")]
    assert deletes[0].message.startswith("Deleted SSH key one (ED25519 256, SHA256:")
    assert deletes[1].message.startswith("Deleted SSH key two of alice (")
    with pytest.raises(NotFound):
        sshkey_delete(actor=alice, via="web", key=mine.pk)  # already gone


def test_list_and_authorized_keys_are_the_users_own_oldest_first(alice, bob, admin_user, rsa_2048_pub):
    first = sshkey_add(actor=alice, via="web", public_key=ed25519_line("first") + "  ")
    second = sshkey_add(actor=alice, via="api", public_key=rsa_2048_pub)
    sshkey_add(actor=bob, via="web", public_key=ed25519_line("bob"))
    assert list(sshkey_list(alice)) == [first, second]
    assert authorized_keys(alice) == [first.public_key, second.public_key]
    assert authorized_keys(alice)[0].endswith(" first") and authorized_keys(alice)[1].startswith("ssh-rsa ")
    assert all("\n" not in line for line in authorized_keys(alice))
    assert authorized_keys(admin_user) == []  # administrators list their own keys too
    assert authorized_keys(AnonymousUser()) == [] and list(sshkey_list(None)) == []


def test_deleting_the_user_deletes_their_keys(alice):
    sshkey_add(actor=alice, via="web", public_key=ed25519_line())
    alice.delete()
    assert not SSHKey.objects.exists()
