"""The /vm command language: words and options only (values are validated by the services)."""

from __future__ import annotations

import pytest

from chatops import commands as c
from chatops import formatting as f


@pytest.mark.parametrize("text, expected", [
    ("", c.Help()),
    ("help", c.Help()),
    ("help create", c.Help(topic="create")),
    ("link", c.Link()),
    ("list", c.ListVMs()),
    ("ls", c.ListVMs()),
    ("create web-1", c.Create(name="web-1")),
    ("create web-1 --flavor small --image demo", c.Create(name="web-1", flavor="small", image="demo")),
    ("create web-1 --flavor=small --cpus 2 --memory 512 --disk 4",
     c.Create(name="web-1", flavor="small", vcpus="2", memory_mib="512", disk_gib="4")),
    ('create web-1 --description "my test box"', c.Create(name="web-1", description="my test box")),
    ("create web-1 --description “smart quotes”", c.Create(name="web-1", description="smart quotes")),
    ("CREATE web-1 --FLAVOR small", c.Create(name="web-1", flavor="small")),
    ("start web-1", c.Action("start", "web-1")),
    ("stop web-1", c.Action("stop", "web-1")),
    ("reboot web-1", c.Action("reboot", "web-1")),
    ("force-off web-1", c.Action("force_off", "web-1")),
    ("delete web-1", c.Action("delete", "web-1")),
    ("console web-1", c.Console("web-1")),
    ("quota", c.Quota()),
    ("quota request --vms 5 --memory 4096 for the demo",
     c.QuotaRequest(max_vms="5", max_memory_mib="4096", reason="for the demo")),
    ("hosts", c.Hosts()),
    ("subscribe", c.Subscribe("here", c.DEFAULT_EVENTS)),
    ("subscribe me failures", c.Subscribe("me", ("job.failed",))),
    ("subscribe here jobs vm-state", c.Subscribe("here", ("job.succeeded", "job.failed", "vm.state"))),
    ("unsubscribe me", c.Unsubscribe("me")),
    ("subscriptions", c.Subscriptions()),
    ("snapshot web-1", c.TakeSnapshot("web-1")),
    ('snapshot web-1 before-upgrade --description "pre 2.0"', c.TakeSnapshot("web-1", "before-upgrade", "pre 2.0")),
    ("snapshots web-1", c.ListSnapshots("web-1")),
    ("grow-disk web-1 20", c.GrowDisk("web-1", "20")),
    ("revert web-1 before-upgrade", c.Revert("web-1", "before-upgrade")),
    ("keys", c.ListKeys()),
    ("ssh-keys", c.ListKeys()),
])
def test_parse(text, expected):
    assert c.parse(text) == expected


def test_names_are_passed_through_for_the_service_to_judge():
    assert c.parse("create <@U123>") == c.Create(name="<@U123>")
    assert c.parse("create &lt;b&gt;") == c.Create(name="<b>")  # Slack's escaping undone


@pytest.mark.parametrize("text, message", [
    ("create", "Which VM? Type `/vm create NAME`."),
    ("stop", "Which VM? Type `/vm stop NAME`."),
    ("stop a b", "Unexpected argument 'b': `/vm stop` takes one VM name."),
    ("create web-1 --flavor", "Option --flavor needs a value."),
    ("create web-1 --gpu 1", "Unknown option --gpu for create"),
    ("list all", "`/vm list` takes no arguments."),
    ('create "web-1', "Could not read the command: no closing quotation."),
    ("quota request", "Say what you need"),
    ("subscribe cats", "Unknown event 'cats'"),
    ("snapshot", "Which VM? Type `/vm snapshot NAME [SNAPSHOT-NAME]`."),
    ("snapshot a b c", "Unexpected argument 'c'"),
    ("revert web-1", "Type `/vm revert NAME SNAPSHOT-NAME`"),
    ("grow-disk web-1", "Type `/vm grow-disk NAME GiB`"),
    ("rm-rf", "Unknown command 'rm-rf'. Type `/vm help` for the list."),
    ("keys add ssh-ed25519 AAAA", "`/vm keys` only lists your SSH keys. Add or delete keys in the portal"),
    ("x" * 1001, "too long (1001 characters; at most 1000)"),
])
def test_parse_errors_say_what_to_type(text, message):
    with pytest.raises(c.ParseError) as exc:
        c.parse(text)
    assert message in exc.value.message


def test_parse_errors_quote_at_most_a_little_of_the_input():
    with pytest.raises(c.ParseError) as exc:
        c.parse("stop a " + "b" * 500)
    assert len(exc.value.message) < 120


def test_escape_neutralises_mentions_and_links():
    assert f.esc("<@U1> <!here> <http://x|y> & co") == "&lt;@U1&gt; &lt;!here&gt; &lt;http://x|y&gt; &amp; co"


def test_quota_bar():
    assert f.bar(0) == "░" * 10
    assert f.bar(50) == "█" * 5 + "░" * 5
    assert f.bar(100) == "█" * 10


@pytest.mark.parametrize("text, expected", [
    ("create web-2 image=web-template", c.Create(name="web-2", image="web-template")),
    ("create web-2 image=web-template clone=full", c.Create(name="web-2", image="web-template", clone="full")),
    ("create web-2 --image web-template --clone full", c.Create(name="web-2", image="web-template", clone="full")),
])
def test_create_from_a_template_with_key_value_options(text, expected):
    """`key=value` words are options too (no VM name holds "="), so `/vm create NAME image=TEMPLATE` works."""
    assert c.parse(text) == expected


def test_an_unknown_key_value_word_is_still_an_unexpected_argument():
    with pytest.raises(c.ParseError, match="Unexpected argument 'colour=red'"):
        c.parse("create web-2 colour=red")
