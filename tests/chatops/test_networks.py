"""Networks from Slack: `/vm create … --net`, `/vm info` (NICs, addresses, the ssh line) and `/vm networks`,
through the real endpoint with signed requests (libvirt's test driver; jobs run on commit)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from chatops import commands as c
from networks.services import network_create
from portal.choices import Via
from portal.models import AuditEvent, Job
from storage.models import Image
from vms.models import VM, VMNic

from .conftest import CHANNEL, reply_of, reply_text

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def nets(test_host, admin_user):
    """lan: open to all and the default; lab: for the qa group; private: administrators only."""
    qa = Group.objects.create(name="qa")
    made = {
        "lan": network_create(actor=admin_user, via=Via.CLI, name="lan", mode="nat", cidr="10.77.0.0/24",
                              hosts=[test_host], is_public=True, is_default=True, title="Everyone's LAN"),
        "lab": network_create(actor=admin_user, via=Via.CLI, name="lab", mode="isolated", cidr="10.78.0.0/24",
                              hosts=[test_host], groups=[qa]),
        "private": network_create(actor=admin_user, via=Via.CLI, name="private", mode="isolated",
                                  cidr="10.79.0.0/24", hosts=[test_host]),
    }
    return made


@pytest.fixture
def alice_linked(alice, link, test_host, small_flavor):
    link(alice, "UALICE")
    return alice


@pytest.mark.parametrize("text, networks", [
    ("create web-1", None),
    ("create web-1 --net lan", ("lan",)),
    ("create web-1 --net lan,lab", ("lan", "lab")),
    ("create web-1 --network=lan", ("lan",)),
    ("create web-1 --net none", ()),
    ("create web-1 --net NONE", ()),
])
def test_net_is_parsed_into_names_none_or_the_default(text, networks):
    assert c.parse(text) == c.Create(name="web-1", networks=networks)


@pytest.mark.parametrize("text, message", [
    ("create web-1 --net", "Option --net needs a value."),
    ("create web-1 --net lan,", "Give network names separated by commas"),
    ("create web-1 --net none,lan", "`--net none` means no NIC at all: give it alone."),
    ("networks lan", "`/vm networks` takes no arguments."),
    ("info", "Which VM? Type `/vm info NAME`."),
])
def test_net_mistakes_are_parse_errors(text, message):
    with pytest.raises(c.ParseError) as exc:
        c.parse(text)
    assert message in exc.value.message


def test_create_with_net_puts_the_vm_on_those_networks(slack, alice_linked, nets):
    alice_linked.groups.add(Group.objects.get(name="qa"))
    response = slack.command("create web-1 --flavor small --net lan,lab")

    assert reply_of(response) == {}  # announced in the channel
    vm = VM.objects.get(name="web-1")
    assert vm.status == "running"
    assert [n.network.name for n in vm.nics.order_by("id")] == ["lan", "lab"]
    parent = slack.fake.posts(CHANNEL)[0]
    assert "is creating *web-1* (1 vCPU · 128 MiB · 1 GiB · test-blank) on lan, lab · job" in parent.text
    assert AuditEvent.objects.get(action="vm.create").data["networks"] == ["lan", "lab"]


def test_without_net_the_default_network_and_with_net_none_no_nic(slack, alice_linked, nets):
    slack.command("create web-1 --flavor small")
    slack.command("create web-2 --flavor small --net none")

    assert [n.network.name for n in VM.objects.get(name="web-1").nics.all()] == ["lan"]
    assert not VM.objects.get(name="web-2").nics.exists()


@pytest.mark.parametrize("net, message", [
    ("nope", ":warning: Unknown network 'nope' (yours: lan)."),
    ("private", ":warning: You may not use the network private."),
    ("lab", ":warning: You may not use the network lab."),  # not in the qa group
])
def test_an_unknown_or_forbidden_network_gets_a_clear_private_reply_and_no_vm(slack, alice_linked, nets, net,
                                                                             message):
    response = slack.command(f"create web-1 --flavor small --net {net}")

    body = reply_of(response)
    assert body["response_type"] == "ephemeral" and body["text"] == message
    assert not VM.objects.exists() and not VMNic.objects.exists() and not Job.objects.exists()
    assert slack.fake.posts(CHANNEL) == []  # nothing announced


def test_networks_lists_what_the_caller_may_use_with_the_default_marked(slack, alice_linked, nets, admin_user,
                                                                        link):
    text = reply_text(slack.command("networks"))
    assert "*Networks you can use* (1)" in text
    assert "• `lan` ⭐ *default* — Everyone's LAN · NAT · 10.77.0.0/24" in text
    assert "lab" not in text and "private" not in text
    assert "`/vm create NAME --net lan`" in text

    alice_linked.groups.add(Group.objects.get(name="qa"))
    text = reply_text(slack.command("networks"))
    assert "(2)" in text and "• `lab` — isolated · 10.78.0.0/24" in text

    link(admin_user, "UADMIN")
    text = reply_text(slack.command("networks", user="UADMIN"))
    assert "*Networks* (3)" in text
    assert "open to all" in text and "groups qa" in text and "administrators only" in text


def test_networks_says_so_when_there_is_none(slack, alice_linked):
    assert "There is no network you can use" in reply_text(slack.command("networks"))


def test_info_shows_each_nic_and_the_ssh_line(slack, alice_linked, nets, monkeypatch):
    alice_linked.groups.add(Group.objects.get(name="qa"))
    slack.command("create web-1 --flavor small --net lan,lab")
    vm = VM.objects.get(name="web-1")
    first, second = vm.nics.order_by("id")

    text = reply_text(slack.command("info web-1"))
    assert "🟢 Running  *web-1* — 1 vCPU · 128 MiB · 1 GiB · test-blank" in text
    assert f"• `lan` · `{first.mac}` · _no address yet_" in text
    assert f"• `lab` · `{second.mac}` · _no address yet_" in text
    assert "The ssh line appears once the guest has taken an address" in text

    # The monitor saw a lease; the image logs in as debian.
    VMNic.objects.filter(pk=first.pk).update(ip_address="10.77.0.23")
    Image.objects.update(login_user="debian")
    response = slack.command("show web-1")
    text = reply_text(response)
    assert f"• `lan` · `{first.mac}` · `10.77.0.23`" in text
    assert "```ssh debian@10.77.0.23```" in text
    assert reply_of(response)["response_type"] == "ephemeral"
    assert [b["text"]["text"] for b in reply_of(response)["blocks"][1]["elements"]] == \
        ["Stop", "Pause", "Console", "Delete"]


def test_info_of_someone_elses_vm_is_not_found(slack, alice_linked, bob, nets):
    VM.objects.create(name="bob-db", owner=bob, host=nets["lan"].hosts.get(), vcpus=1, memory_mib=128, disk_gib=1,
                      status="running")
    assert reply_text(slack.command("info bob-db")).strip() == ":warning: No VM named 'bob-db'."


def test_help_names_the_network_commands(slack, alice_linked):
    text = reply_text(slack.command("help"))
    assert "--net NAME[,NAME]" in text and "`/vm info NAME`" in text and "`/vm networks`" in text


def test_every_verb_of_the_help_is_in_the_guides_command_reference():
    """`/vm help` and docs/slack.md's command reference stay in step: each verb the help names has a row."""
    import re

    from django.conf import settings

    from chatops import formatting as f

    guide = (settings.BASE_DIR / "docs" / "slack.md").read_text()
    reference = guide.split("## 4. Command reference", 1)[1].split("\n## ", 1)[0]
    rows = {m.group(1) for m in re.finditer(r"`([a-z-]+)(?: [^`]*)?`", reference)}
    verbs = {m.group(1) for m in re.finditer(r"`/vm ([a-z-]+)", f.help_reply("/vm", is_staff=True).text)}
    assert {"info", "networks", "create"} <= verbs
    assert verbs <= rows, verbs - rows
