"""Account linking: the confirm page names the Slack user as Slack reports them, and a Slack user
linked to one portal account is never moved to another without that account unlinking it first."""

from __future__ import annotations

import pytest

from chatops import services
from chatops.models import LinkToken, SlackIdentity
from portal.exceptions import Conflict
from portal.models import AuditEvent

from .conftest import TEAM, reply_text

pytestmark = pytest.mark.django_db

REFUSED = "This Slack user is already linked to another portal account, so nothing was changed."
MUST_UNLINK = "That account must unlink it first (with /vm unlink in Slack"


def _link_path(slack, **kwargs) -> str:
    text = reply_text(slack.command("link", **kwargs))
    url = text.split("<", 1)[1].split("|", 1)[0]
    return url.removeprefix("http://portal.test")


def test_confirm_page_names_the_slack_user_from_users_info_not_from_the_request(slack, alice, client):
    slack.fake.users["UALICE"] = {"real_name": "Alice Liddell", "name": "alice", "display_name": "al"}
    # Anyone can put any user_name in front of their own user id: it is never shown.
    path = _link_path(slack, user_name="the-ceo")
    client.force_login(alice)
    page = client.get(path).content.decode()
    assert "the-ceo" not in page
    assert "<strong>Alice Liddell</strong>" in page and "@alice" in page
    assert "user id <code>UALICE</code>, workspace <code>T0PORTAL</code>, as Slack reports them" in page
    assert "Link Slack user Alice Liddell to alice" in page
    [info] = slack.fake.api("users.info")
    assert info.body["user"] == "UALICE"

    client.post(path)
    identity = SlackIdentity.objects.get()
    assert identity.slack_name == "Alice Liddell"
    assert "(Alice Liddell)" in AuditEvent.objects.get(action="slack.link").message


def test_when_users_info_fails_the_page_shows_the_ids_and_still_links(slack, alice, client):
    path = _link_path(slack, user_name="the-ceo")  # the fake does not know UALICE: user_not_found
    client.force_login(alice)
    page = client.get(path).content.decode()
    assert "the-ceo" not in page
    assert "<strong>UALICE</strong>" in page and "Slack did not give their name just now" in page
    assert client.post(path).status_code == 302
    assert SlackIdentity.objects.get().slack_name == ""


def test_a_linked_slack_user_is_not_moved_to_another_account(slack, alice, bob, client, link,
                                                             django_capture_on_commit_callbacks):
    link(alice, "UALICE")
    slack.fake.users["UALICE"] = {"real_name": "Alice Liddell"}
    path = _link_path(slack)  # the Slack user asks again (or someone else got hold of the URL)
    client.force_login(bob)

    page = client.get(path)
    assert page.status_code == 200
    text = page.content.decode()
    assert "This Slack user cannot be linked to bob." in text and REFUSED in text and MUST_UNLINK in text
    assert "<form method=\"post\">" not in text  # nothing to confirm

    with django_capture_on_commit_callbacks(execute=True):
        refused = client.post(path)
    assert refused.status_code == 409
    assert REFUSED in refused.content.decode() and MUST_UNLINK in refused.content.decode()
    identity = SlackIdentity.objects.get()
    assert identity.user == alice  # untouched
    assert LinkToken.objects.get().used_by == bob  # the link is spent: no retrying it

    # Audited for both accounts...
    on_identity = AuditEvent.objects.get(action="slack.link", target_type="slackidentity")
    on_alice = AuditEvent.objects.get(action="slack.link", target_type="user")
    for event in (on_identity, on_alice):
        assert (event.actor, event.outcome, event.via) == (bob, "denied", "web")
        assert event.data["linked_to"] == "alice" and event.data["requested_by"] == "bob"
        assert event.data["slack_user"] == "UALICE"
    assert on_alice.target_id == str(alice.pk) and on_alice.target_name == "alice"
    assert "bob tried to link Slack user UALICE of workspace T0PORTAL" in on_alice.message
    assert "it is linked to alice, which must unlink it first" in on_identity.message
    # ...and the Slack user is told by direct message; the command's response_url is not "linked".
    [dm] = slack.fake.posts("UALICE")
    assert "The portal account *bob* tried to link your Slack account, which is linked to *alice*." in dm.text
    assert "Nothing was changed" in dm.text and "`/vm unlink` first" in dm.text
    assert not any("Linked to the portal account" in c.text for c in slack.fake.responses())
    # Slack commands still act as alice.
    assert "No VMs yet" in reply_text(slack.command("list"))


def test_the_service_refuses_the_move_whatever_the_door(alice, bob, settings):
    settings.SLACK_BOT_TOKEN = None  # no Slack at all: the rule is the service's
    SlackIdentity.objects.create(team_id=TEAM, slack_user_id="UALICE", user=alice)
    token = services.link_token_create(team_id=TEAM, slack_user_id="UALICE")
    with pytest.raises(Conflict) as exc:
        services.identity_link(actor=bob, via="web", token=token, slack_name="Mallory")
    assert exc.value.message.startswith(REFUSED)
    identity = SlackIdentity.objects.get()
    assert identity.user == alice and identity.slack_name == ""
    assert AuditEvent.objects.filter(action="slack.link", outcome="denied").count() == 2


def test_the_same_account_may_confirm_again(slack, alice, client, link):
    link(alice, "UALICE")
    slack.fake.users["UALICE"] = {"real_name": "Alice Liddell"}
    path = _link_path(slack)
    client.force_login(alice)
    assert client.post(path).status_code == 302
    identity = SlackIdentity.objects.get()
    assert identity.user == alice and identity.slack_name == "Alice Liddell"
    assert AuditEvent.objects.get(action="slack.link").outcome == "succeeded"


def test_unlink_from_slack_then_link_to_another_account(slack, alice, bob, client, link):
    """The first account's consent: its Slack user types /vm unlink; then the link can go elsewhere."""
    link(alice, "UALICE")
    text = reply_text(slack.command("unlink"))
    assert "Your Slack account is no longer linked to the portal account *alice*." in text
    assert not SlackIdentity.objects.exists()
    event = AuditEvent.objects.get(action="slack.unlink")
    assert (event.actor, event.via, event.data["slack_user"]) == (alice, "slack", "UALICE")
    assert "not linked" in reply_text(slack.command("list"))

    path = _link_path(slack)
    client.force_login(bob)
    assert client.post(path).status_code == 302
    assert SlackIdentity.objects.get().user == bob


def test_unlink_needs_a_link_and_takes_no_arguments(slack, alice, link):
    assert "not linked to a portal account" in reply_text(slack.command("unlink"))
    link(alice, "UALICE")
    assert "`/vm unlink` takes no arguments" in reply_text(slack.command("unlink UBOB"))
    assert SlackIdentity.objects.filter(slack_user_id="UALICE").exists()
