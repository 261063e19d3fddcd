"""`/vm keys` in Slack: the caller's keys (name, type, fingerprint), read through accounts.selectors.

Commands go through the real /slack/events endpoint, signed like Slack's (the kit of tests/chatops).
Keys are never added from Slack: a public key pasted in a channel stays in its history.
"""

from __future__ import annotations

import pytest

from accounts.models import SSHKey
from accounts.services import sshkey_add
from tests.chatops import conftest as slack_kit
from tests.chatops.conftest import reply_of, reply_text

from .conftest import ed25519_line

# The Slack kit's fixtures, under their own names so that pytest finds them in this module.
globals().update({name: getattr(slack_kit, name) for name in ("fake_slack", "slack_on", "slack", "link")})

pytestmark = pytest.mark.django_db


def test_keys_lists_the_callers_keys_only(slack, alice, bob, link, rsa_2048_pub):
    link(alice, "UALICE")
    laptop = sshkey_add(actor=alice, via="web", public_key=ed25519_line(), name="laptop <!channel>")
    ci = sshkey_add(actor=alice, via="web", public_key=rsa_2048_pub, name="ci")
    sshkey_add(actor=bob, via="web", public_key=ed25519_line(), name="bob-key")
    response = slack.command("keys")
    assert reply_of(response)["response_type"] == "ephemeral"
    text = reply_text(response)
    assert "*Your SSH keys* (2)" in text
    assert f"*laptop &lt;!channel&gt;* — ED25519 256 · `{laptop.fingerprint}`" in text  # no ping smuggled in
    assert f"*ci* — RSA 2048 · `{ci.fingerprint}`" in text
    assert "bob-key" not in text
    assert laptop.public_key.split()[1] not in text  # fingerprints only, never the key itself
    assert "<http://portal.test/account/keys/|Add or delete keys in the portal>" in text


def test_no_keys_yet_says_where_to_add_one(slack, alice, link):
    link(alice, "UALICE")
    text = reply_text(slack.command("keys"))
    assert "You have no SSH keys yet. <http://portal.test/account/keys/|Add one in the portal>" in text


def test_keys_cannot_be_added_from_slack(slack, alice, link):
    link(alice, "UALICE")
    text = reply_text(slack.command(f"keys add {ed25519_line()}"))
    assert "`/vm keys` only lists your SSH keys. Add or delete keys in the portal" in text
    assert not SSHKey.objects.exists()


def test_unlinked_users_see_no_keys_and_help_names_the_verb(slack, alice):
    sshkey_add(actor=alice, via="web", public_key=ed25519_line(), name="laptop")
    text = reply_text(slack.command("keys", user="USTRANGER"))
    assert "not linked" in text and "laptop" not in text
    assert "`/vm keys` — your SSH keys" in reply_text(slack.command("help"))
