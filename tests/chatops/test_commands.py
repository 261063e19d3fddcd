"""Slash commands through the real endpoint: identity, validation shared with the web, bad input."""

from __future__ import annotations

import pytest

from chatops.models import LinkToken, SlackIdentity
from portal.exceptions import ValidationFailed
from portal.exceptions import user_message as error_text
from portal.models import AuditEvent, Job
from vms.models import VM
from vms.validation import validate_vm_name

from .conftest import reply_of, reply_text

pytestmark = pytest.mark.django_db


def _vm(owner, host, name: str, status: str = "running") -> VM:
    """A VM row for read-only commands (no job needed: these tests never touch libvirt)."""
    return VM.objects.create(name=name, owner=owner, host=host, vcpus=1, memory_mib=128, disk_gib=1,
                             status=status)


# --- identity -------------------------------------------------------------------------------------

def test_unlinked_user_is_told_to_link_and_nothing_happens(slack, alice, test_host, small_flavor):
    response = slack.command("create web-1 --flavor small")
    text = reply_text(response)
    assert "not linked to a portal account" in text and "`/vm link`" in text
    assert reply_of(response)["response_type"] == "ephemeral"
    assert VM.objects.count() == 0 and Job.objects.count() == 0
    assert slack.fake.said() == []


def test_unlinked_user_gets_help_with_the_link_hint(slack):
    text = reply_text(slack.command(""))
    assert "/vm list" in text and "not linked yet" in text


def test_display_name_is_never_identity(slack, alice, link, test_host):
    """Same user name as a linked account, different Slack user id: still unlinked."""
    link(alice, "UALICE")
    response = slack.command("list", user="UIMPOSTOR", user_name="ualice")
    assert "not linked" in reply_text(response)


def test_disabled_portal_account_can_do_nothing(slack, alice, link, test_host, small_flavor):
    link(alice, "UALICE")
    alice.is_active = False
    alice.save()
    assert "disabled" in reply_text(slack.command("create web-1 --flavor small"))
    assert VM.objects.count() == 0


def test_link_flow_links_the_slack_user_to_the_signed_in_portal_user(slack, alice, client):
    slack.fake.users["UALICE"] = {"real_name": "Alice Liddell", "name": "alice"}
    text = reply_text(slack.command("link", user_name="alice.slack"))
    assert reply_of(slack.command("link"))["response_type"] == "ephemeral"
    url = text.split("<", 1)[1].split("|", 1)[0]
    assert url.startswith("http://portal.test/slack/link/")
    path = url.removeprefix("http://portal.test")

    # Not signed in: the login page first.
    assert client.get(path).status_code == 302
    client.force_login(alice)
    page = client.get(path)
    assert page.status_code == 200
    # Named as Slack's users.info reports the verified user id, not by the request's user_name.
    assert "Alice Liddell" in page.content.decode() and "UALICE" in page.content.decode()
    assert "alice.slack" not in page.content.decode()
    assert not SlackIdentity.objects.exists()  # GET never links (link unfurlers, prefetchers)

    done = client.post(path)
    assert done.status_code == 302
    identity = SlackIdentity.objects.get()
    assert (identity.team_id, identity.slack_user_id, identity.user) == ("T0PORTAL", "UALICE", alice)
    event = AuditEvent.objects.get(action="slack.link")
    assert event.actor == alice and event.data["slack_user"] == "UALICE"
    # Slack is told through the command's response_url.
    assert "Linked to the portal account *alice*" in slack.fake.responses()[-1].text
    # The token works once.
    again = client.post(path)
    assert again.status_code == 409 or again.status_code == 410
    assert "already used" in again.content.decode()
    # And now the command acts as alice.
    assert "No VMs yet" in reply_text(slack.command("list"))


def test_link_tokens_are_stored_hashed_and_expire(slack, alice, client):
    text = reply_text(slack.command("link"))
    token = text.split("/slack/link/", 1)[1].split("/", 1)[0]
    stored = LinkToken.objects.get()
    assert token not in stored.token_hash
    LinkToken.objects.update(expires_at=stored.created_at)
    client.force_login(alice)
    page = client.get(f"/slack/link/{token}/")
    assert page.status_code == 410 and "expired" in page.content.decode()
    assert client.post(f"/slack/link/{token}/").status_code == 410
    assert not SlackIdentity.objects.exists()


def test_unknown_link_token_is_404(alice, client):
    client.force_login(alice)
    page = client.get("/slack/link/not-a-token/")
    assert page.status_code == 404 and "not valid" in page.content.decode()


# --- reading ----------------------------------------------------------------------------------------

def test_list_shows_only_the_users_own_vms(slack, alice, bob, link, test_host):
    link(alice, "UALICE")
    _vm(alice, test_host, "alice-web")
    _vm(bob, test_host, "bob-db")
    text = reply_text(slack.command("list"))
    assert "alice-web" in text and "Running" in text
    assert "bob-db" not in text


def test_admin_list_shows_owners(slack, admin_user, alice, link, test_host):
    link(admin_user, "UADMIN")
    _vm(alice, test_host, "alice-web")
    text = reply_text(slack.command("list", user="UADMIN"))
    assert "All VMs" in text and "alice-web" in text and "alice" in text


def test_quota_shows_usage_bars_with_numbers(slack, alice, link, test_host):
    link(alice, "UALICE")
    _vm(alice, test_host, "alice-web")
    text = reply_text(slack.command("quota"))
    # The labels are padded to the longest one, "Backup space" (issue #11).
    assert "VMs          ███░░░░░░░ 1 / 3" in text
    assert "Memory       █░░░░░░░░░ 128 MiB / 2 GiB" in text
    assert "Backup space ░░░░░░░░░░ 0 / " in text
    assert "quota request" in text


def _console_links(text: str) -> list[str]:
    import re

    return [url.replace("http://portal.test", "") for url in re.findall(r"<(http://portal\.test/consoles/link/[^|>]+)", text)]


def test_console_sends_ephemeral_one_time_links_to_the_console_pages(slack, alice, bob, link, test_host, client):
    link(alice, "UALICE")
    vm = _vm(alice, test_host, "alice-web")
    response = slack.command("console alice-web")
    assert reply_of(response)["response_type"] == "ephemeral"
    screen, terminal = _console_links(reply_text(response))

    assert client.get(screen).status_code == 302  # to the login page first: the link stays unspent
    client.force_login(bob)
    refused = client.get(screen)
    assert refused.status_code == 403 and b"made for another portal account" in refused.content
    client.force_login(alice)
    opened = client.get(screen)
    assert opened.status_code == 302 and opened["Location"] == f"/consoles/vm/{vm.pk}/screen/"
    again = client.get(screen)
    assert again.status_code == 410 and b"already used" in again.content
    assert client.get(terminal)["Location"] == f"/consoles/vm/{vm.pk}/terminal/"
    assert client.get("/consoles/link/not-a-token/").status_code == 404


def test_console_link_expires(slack, alice, link, test_host, client, settings):
    link(alice, "UALICE")
    _vm(alice, test_host, "alice-web")
    settings.CONSOLE_LINK_TTL_SECONDS = 0
    screen, _ = _console_links(reply_text(slack.command("console alice-web")))
    client.force_login(alice)
    gone = client.get(screen)
    assert gone.status_code == 410 and b"expired" in gone.content


def test_hosts_is_for_administrators(slack, alice, admin_user, link, test_host):
    link(alice, "UALICE")
    link(admin_user, "UADMIN")
    assert "Only administrators can see the hosts" in reply_text(slack.command("hosts"))
    text = reply_text(slack.command("hosts", user="UADMIN"))
    assert "testhost" in text and "Up" in text


# --- validation is the service's ------------------------------------------------------------------

def test_bad_name_gets_the_same_message_as_the_web(slack, alice, link, test_host, small_flavor):
    link(alice, "UALICE")
    with pytest.raises(ValidationFailed) as expected:
        validate_vm_name("Web_1")
    text = reply_text(slack.command("create Web_1 --flavor small"))
    assert error_text(expected.value) in text
    assert VM.objects.count() == 0


def test_unknown_flavor_gets_the_services_message(slack, alice, link, test_host, small_flavor):
    link(alice, "UALICE")
    text = reply_text(slack.command("create web-1 --flavor huge"))
    assert "Unknown flavor 'huge' (known: small)." in text
    assert VM.objects.count() == 0


def test_unknown_image_gets_the_services_message(slack, alice, link, test_host, small_flavor):
    link(alice, "UALICE")
    text = reply_text(slack.command("create web-1 --flavor small --image windows"))
    assert "Unknown image 'windows' (known: test-blank)." in text


def test_parse_errors_say_what_to_type(slack, alice, link):
    link(alice, "UALICE")
    assert "Which VM? Type `/vm stop NAME`." in reply_text(slack.command("stop"))
    assert "Unknown option --colour for create" in reply_text(slack.command("create x --colour red"))
    assert "Unknown command 'frobnicate'" in reply_text(slack.command("frobnicate"))


# --- hostile input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, shown", [
    ("create '<@U0ADMIN>' --flavor small", "&lt;@U0ADMIN&gt;"),
    ("create \"<!channel>\" --flavor small", "&lt;!channel&gt;"),
    ("create \"<http://evil.example|click>\" --flavor small", "&lt;http://evil.example|click&gt;"),
    ("create \"web'1\" --flavor small", "web'1"),
    ("create \"a; rm -rf /\" --flavor small", "a; rm -rf /"),
])
def test_mentions_links_and_quotes_in_arguments_are_shown_as_text(slack, alice, link, test_host, small_flavor,
                                                                  text, shown):
    link(alice, "UALICE")
    reply = reply_text(slack.command(text))
    assert "Invalid name" in reply and shown in reply
    assert "<@U0ADMIN>" not in reply and "<!channel>" not in reply and "<http://evil" not in reply
    assert VM.objects.count() == 0


def test_slack_escaped_angle_brackets_are_unescaped_then_escaped_again(slack, alice, link, test_host,
                                                                       small_flavor):
    link(alice, "UALICE")
    reply = reply_text(slack.command("create &lt;script&gt; --flavor small"))
    assert "'&lt;script&gt;'" in reply and "<script>" not in reply


def test_unbalanced_quotes_are_a_clear_error(slack, alice, link):
    link(alice, "UALICE")
    assert "no closing quotation" in reply_text(slack.command('create "web-1 --flavor small'))


def test_very_long_text_is_refused_before_parsing(slack, alice, link, test_host, small_flavor):
    link(alice, "UALICE")
    reply = reply_text(slack.command("create " + "a" * 5000))
    assert "too long (5007 characters; at most 1000)" in reply
    assert VM.objects.count() == 0


def test_long_name_gets_the_services_length_message(slack, alice, link, test_host, small_flavor):
    link(alice, "UALICE")
    reply = reply_text(slack.command("create " + "a" * 100 + " --flavor small"))
    assert "Name is too long (100 characters, at most 63)." in reply


def test_another_users_vm_is_indistinguishable_from_a_missing_one(slack, alice, bob, link, test_host):
    link(alice, "UALICE")
    theirs = _vm(bob, test_host, "bob-db")
    for command in ("stop bob-db", "start bob-db", "delete bob-db", "console bob-db"):
        assert "No VM named 'bob-db'." in reply_text(slack.command(command))
    theirs.refresh_from_db()
    assert theirs.status == "running"
    assert Job.objects.count() == 0


def test_clicking_a_button_on_another_users_vm_does_nothing(slack, alice, bob, link, test_host):
    link(bob, "UBOB")
    vm = _vm(alice, test_host, "alice-web")
    slack.click("vm_stop", str(vm.pk), user="UBOB")
    [answer] = slack.fake.responses()
    assert f"VM {vm.pk} not found." in answer.text
    assert Job.objects.count() == 0
    vm.refresh_from_db()
    assert vm.status == "running"


def test_unlinked_click_does_nothing(slack, alice, test_host):
    vm = _vm(alice, test_host, "alice-web")
    slack.click("vm_delete", str(vm.pk), user="USTRANGER")
    [answer] = slack.fake.responses()
    assert "not linked" in answer.text
    assert Job.objects.count() == 0


def test_forged_button_values_are_refused(slack, alice, link):
    link(alice, "UALICE")
    slack.click("vm_stop", "1 OR 1=1")
    slack.click("quota_request", "{not json")
    slack.click("vm_frobnicate", "1")
    texts = [c.text for c in slack.fake.responses()]
    assert "This button carries no valid id." in texts[0]
    assert "This button carries no valid size." in texts[1]
    assert "This button is not known to the portal." in texts[2]


# --- confirmations ----------------------------------------------------------------------------------

@pytest.mark.parametrize("verb, action, label", [
    ("stop", "vm_stop", "Stop"), ("reboot", "vm_reboot", "Reboot"), ("force-off", "vm_force_off", "Force off"),
    ("delete", "vm_delete", "Delete"),
])
def test_destructive_commands_ask_first_with_buttons(slack, alice, link, test_host, verb, action, label):
    link(alice, "UALICE")
    vm = _vm(alice, test_host, "alice-web")
    body = reply_of(slack.command(f"{verb} alice-web"))
    assert body["response_type"] == "ephemeral"
    assert f"{label} *alice-web*?" in body["text"]
    buttons = body["blocks"][1]["elements"]
    assert [(b["text"]["text"], b["action_id"], b["value"]) for b in buttons] == [
        (f"{label} alice-web", action, str(vm.pk)), ("Cancel", "vm_cancel", str(vm.pk))]
    assert Job.objects.count() == 0


def test_cancel_deletes_the_prompt(slack, alice, link, test_host):
    link(alice, "UALICE")
    vm = _vm(alice, test_host, "alice-web")
    slack.click("vm_cancel", str(vm.pk), ephemeral=True)
    [answer] = slack.fake.responses()
    assert answer.body == {"delete_original": True}
    assert Job.objects.count() == 0


# --- subscriptions ----------------------------------------------------------------------------------

def test_subscribe_and_unsubscribe(slack, alice, link):
    link(alice, "UALICE")
    assert "This channel gets" in reply_text(slack.command("subscribe jobs"))
    assert "You'll get direct messages" in reply_text(slack.command("subscribe me failures"))
    text = reply_text(slack.command("subscriptions"))
    assert "<#CGENERAL>: Job finished, Job failed" in text
    assert "direct messages: Job failed" in text
    assert "Only administrators can subscribe to host events." in reply_text(slack.command("subscribe host-down"))
    assert "Unsubscribed" in reply_text(slack.command("unsubscribe"))
    assert "There was no subscription" in reply_text(slack.command("unsubscribe"))
    event = AuditEvent.objects.filter(action="slack.subscribe").first()
    assert event.via == "slack" and event.data["slack_channel"] in ("CGENERAL", "UALICE")
