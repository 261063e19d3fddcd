"""Pause and resume from Slack: `/vm pause NAME`, `/vm resume NAME` and [Pause]/[Resume] buttons, through
vms.services.vm_action like every other power action."""

from __future__ import annotations

import pytest

from chatops import commands as c
from portal.models import AuditEvent, Job
from vms.models import VM

from .conftest import CHANNEL, reply_of, reply_text


def test_pause_and_resume_parse_as_power_actions():
    assert c.parse("pause web-1") == c.Action(action="pause", name="web-1")
    assert c.parse("resume web-1") == c.Action(action="resume", name="web-1")
    assert c.parse("unpause web-1") == c.Action(action="resume", name="web-1")
    with pytest.raises(c.ParseError) as exc:
        c.parse("pause")
    assert exc.value.message == "Which VM? Type `/vm pause NAME`."


@pytest.mark.django_db
def test_help_lists_pause_and_resume(slack, alice, link):
    link(alice, "UALICE")
    text = reply_text(slack.command("help"))
    assert "`/vm pause NAME` · `/vm resume NAME`" in text
    assert "`/vm unlink`" in text


@pytest.mark.django_db(transaction=True)
def test_pause_and_resume_typed_and_clicked(slack, alice, link, test_host, small_flavor):
    link(alice, "UALICE")
    slack.command("create web-1 --flavor small")
    vm = VM.objects.get(name="web-1")
    running = slack.fake.posts(CHANNEL)[-1]
    assert running.button("Pause")["action_id"] == "vm_pause"
    slack.fake.clear()

    # Typed: no confirmation (nothing is lost); announced in the channel, result in the thread.
    assert reply_of(slack.command("pause web-1")) == {}
    vm.refresh_from_db()
    assert vm.status == "paused"
    parent, paused = slack.fake.posts(CHANNEL)
    assert "⏳ Pausing web-1. · job" in parent.text
    assert paused.body["thread_ts"] == parent.ts and "⏸️ *web-1* is paused." in paused.text
    assert [b["text"]["text"] for b in paused.buttons] == ["Resume", "Console", "Delete"]  # the console shows the frozen screen
    assert "web-1 is already paused." in reply_text(slack.command("pause web-1"))

    # Clicked: [Resume] on the paused message.
    slack.fake.clear()
    slack.click_button(paused, "Resume")
    vm.refresh_from_db()
    assert vm.status == "running"
    [replaced] = slack.fake.responses()
    assert replaced.body["replace_original"] is True and "⏳ Resuming web-1." in replaced.text
    [resumed] = slack.fake.posts(CHANNEL)
    assert resumed.body["thread_ts"] == parent.ts and "▶️ *web-1* is running again." in resumed.text

    # And [Pause] on a running message, then `/vm resume` typed.
    slack.fake.clear()
    slack.click_button(resumed, "Pause")
    vm.refresh_from_db()
    assert vm.status == "paused"
    slack.command("resume web-1")
    vm.refresh_from_db()
    assert vm.status == "running"
    assert Job.objects.filter(kind="vm.pause", via="slack").count() == 2
    assert Job.objects.filter(kind="vm.resume", via="slack").count() == 2
    events = AuditEvent.objects.filter(action__in=["vm.pause", "vm.resume"], via="slack", outcome="requested")
    assert {e.data["slack_user"] for e in events} == {"UALICE"} and events.count() == 4


@pytest.mark.django_db(transaction=True)
def test_resume_of_a_running_vm_is_a_private_no_op(slack, alice, link, test_host, small_flavor):
    link(alice, "UALICE")
    slack.command("create web-1 --flavor small")
    slack.fake.clear()
    assert "web-1 is already running." in reply_text(slack.command("resume web-1"))
    assert slack.fake.said() == []
