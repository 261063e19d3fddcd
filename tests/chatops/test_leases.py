"""VM leases through Slack: `/vm create NAME --lease 7d`, `/vm extend NAME 7d` (within and beyond policy),
and the owner's direct messages from the lease pass (reminder, expiry) reaching the fake Slack Web API."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from chatops import outbox
from chatops.commands import Extend, ParseError, parse
from portal.models import AuditEvent
from quotas.models import Quota
from vms import leases
from vms.models import VM, LeasePolicy

from .conftest import reply_text

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice_linked(alice, link, test_host, small_flavor):
    link(alice, "UALICE")
    return alice


def test_parse_extend():
    assert parse("extend web-1 7d") == Extend(name="web-1", days="7d")
    assert parse("extend web-1 2030-01-31") == Extend(name="web-1", until="2030-01-31")
    assert parse("extend web-1 none") == Extend(name="web-1", remove=True)
    with pytest.raises(ParseError, match="extend NAME 7d"):
        parse("extend web-1")
    assert parse("create web-1 --lease 3d").lease == "3d"


def test_create_with_a_lease_and_extend(slack, alice_linked):
    assert slack.command("create web-1 --flavor small --lease 3d").status_code == 200
    vm = VM.objects.get(name="web-1")
    assert abs((vm.expires_at - (timezone.now() + timedelta(days=3))).total_seconds()) < 120
    text = reply_text(slack.command("extend web-1 4d"))
    vm.refresh_from_db()
    assert abs((vm.expires_at - (timezone.now() + timedelta(days=7))).total_seconds()) < 120
    assert "now ends" in text and "web-1" in text
    done = AuditEvent.objects.get(action="vm.lease.extend", outcome="succeeded")
    assert done.via == "slack" and done.data["slack_user"] == "UALICE"


def test_extend_beyond_policy_gets_a_clear_reply(slack, alice_linked):
    team = Group.objects.create(name="class")
    alice_linked.groups.add(team)
    Quota.objects.create(group=team, max_vms=2, max_vcpus=2, max_memory_mib=1024, max_disk_gib=5)
    LeasePolicy.objects.create(group=team, default_days=2, max_extension_days=3)
    slack.command("create lab-1 --flavor small --group class")
    vm = VM.objects.get(name="lab-1")
    before = vm.expires_at
    text = reply_text(slack.command("extend lab-1 10d"))
    assert "One extension in group class adds at most 3 days" in text
    vm.refresh_from_db()
    assert vm.expires_at == before
    text = reply_text(slack.command("extend lab-1 none"))
    assert "Only administrators" in text


def test_reminder_and_expiry_reach_the_owner_by_direct_message(slack, alice_linked, settings):
    settings.LEASE_REMINDER_DAYS = [3, 1]
    slack.command("create web-1 --flavor small --lease 5")
    vm = VM.objects.get(name="web-1")
    slack.fake.clear()
    leases.lease_pass(now=vm.expires_at - timedelta(days=2))
    leases.lease_pass(now=vm.expires_at - timedelta(days=1.5))  # nothing new: the 3-day reminder was sent
    assert outbox.wait(timeout=30)
    [reminder] = slack.fake.posts("UALICE")
    assert "The lease of your VM *web-1* ends in less than 3 days" in reminder.text
    assert "/vm extend web-1 7d" in reminder.text
    leases.lease_pass(now=vm.expires_at + timedelta(minutes=1))
    assert outbox.wait(timeout=30)
    reminder_and_stop = slack.fake.posts("UALICE")
    assert len(reminder_and_stop) == 2
    assert "ended" in reminder_and_stop[1].text and "it is stopped" in reminder_and_stop[1].text
    assert VM.objects.get(pk=vm.pk).status == "stopped"
