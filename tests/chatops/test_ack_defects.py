"""A slow Slack Web API never delays the acknowledgement: nothing is posted to Slack before it.

The fake Slack is made slow (`delay`); the command is timed without waiting for the posts that
follow the acknowledgement, then the posts are checked to have arrived after it.
"""

from __future__ import annotations

import time

import pytest

from chatops import outbox
from portal.models import Job
from vms.models import VM
from vms.services import vm_action

from .conftest import CHANNEL, reply_of, reply_text

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def stopped_vm(slack, alice, link, test_host, small_flavor) -> VM:
    """alice's web-1, created from Slack and stopped; Bolt's one auth.test already done (fast Slack)."""
    link(alice, "UALICE")
    slack.command("create web-1 --flavor small")
    vm = VM.objects.get(name="web-1")
    vm_action(actor=alice, via="web", vm=vm, action="stop")
    vm.refresh_from_db()
    assert vm.status == "stopped"
    slack.fake.clear()
    return vm


def _timed(call):
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started, time.monotonic()


def test_start_with_a_slow_slack_is_acknowledged_at_once_and_posted_after(slack, stopped_vm):
    slack.fake.delay = 1.5  # slower than the acknowledgement may take, faster than the client's timeout
    response, took, answered_at = _timed(lambda: slack.command("start web-1", wait=False))
    assert response.status_code == 200 and reply_of(response) == {}
    assert took < 1.0, f"the acknowledgement waited {took:.2f} s for Slack"
    assert Job.objects.get(kind="vm.start").status == "succeeded"  # the portal did its part already

    assert outbox.wait(timeout=30)
    parent, follow_up = slack.fake.posts(CHANNEL)
    assert parent.at >= answered_at  # nothing reached Slack before the acknowledgement
    assert "⏳ Starting web-1. · job" in parent.text and "asked by <@UALICE>" in parent.text
    assert follow_up.body["thread_ts"] == parent.ts
    assert "▶️ *web-1* is running." in follow_up.text


def test_a_slack_answering_in_5_seconds_does_not_delay_the_acknowledgement(slack, stopped_vm):
    slack.fake.delay = 5.0  # beyond the Web API client's timeout: every post fails, later
    response, took, answered_at = _timed(lambda: slack.command("start web-1", wait=False))
    assert response.status_code == 200
    assert took < 1.0, f"the acknowledgement waited {took:.2f} s for Slack"
    stopped_vm.refresh_from_db()
    assert stopped_vm.status == "running"
    assert outbox.wait(timeout=60)
    assert all(call.at >= answered_at for call in slack.fake.calls)


def test_a_click_with_a_slow_slack_is_acknowledged_at_once(slack, stopped_vm):
    slack.fake.delay = 1.5
    response, took, answered_at = _timed(lambda: slack.click("vm_start", str(stopped_vm.pk), wait=False))
    assert response.status_code == 200 and response.content == b""
    assert took < 1.0, f"the acknowledgement waited {took:.2f} s for Slack"
    assert outbox.wait(timeout=30)
    replaced, *_ = slack.fake.responses()
    assert replaced.at >= answered_at and "⏳ Starting web-1." in replaced.text


def test_refusals_and_no_ops_are_answered_in_the_acknowledgement_without_slack(slack, stopped_vm):
    slack.fake.delay = 1.5
    response, took, _ = _timed(lambda: slack.command("grow-disk web-1 0", wait=False))
    assert "Disk must be between 1 and" in reply_text(response)
    assert took < 1.0
    response, took, _ = _timed(lambda: slack.command("revert web-1 nope", wait=False))
    assert "has no snapshot 'nope'" in reply_text(response)
    assert took < 1.0
    assert outbox.wait(timeout=30)
    assert slack.fake.said() == []


def test_a_quota_request_with_a_slow_slack_is_acknowledged_at_once(slack, alice, link):
    link(alice, "UALICE")
    slack.command("help")  # Bolt's one auth.test, while Slack is fast
    slack.fake.clear()
    slack.fake.delay = 1.5
    response, took, answered_at = _timed(lambda: slack.command("quota request --vms 5 demo", wait=False))
    assert "was posted to the administrators: VMs 3 → 5" in reply_text(response)
    assert took < 1.0
    assert outbox.wait(timeout=30)
    [post] = slack.fake.posts("CADMINS")
    assert post.at >= answered_at


def test_outside_a_slack_request_posts_go_out_at_once(slack, alice):
    """The job worker and web pages are not answering Slack: their posts are not held back."""
    outbox.defer(lambda: slack.fake.calls.append("ran"))
    assert slack.fake.calls == ["ran"]


def test_a_job_ending_after_the_announcement_is_told_once_in_its_thread(slack, stopped_vm, monkeypatch):
    """The usual order with a job worker: announced (and watched) first, the job ends later."""
    from portal import jobs

    queued = []
    monkeypatch.setattr(jobs, "enqueue", queued.append)  # the worker has not picked it up yet
    slack.command("start web-1")
    [parent] = slack.fake.posts(CHANNEL)
    assert "⏳ Starting web-1." in parent.text
    [job_id] = queued
    assert jobs.run_job(job_id) == "succeeded"  # the worker, outside any Slack request
    parent_again, follow_up = slack.fake.posts(CHANNEL)
    assert follow_up.body["thread_ts"] == parent.ts and "▶️ *web-1* is running." in follow_up.text
    from chatops.notifications import job_finished_tell

    job_finished_tell(job=Job.objects.get(pk=job_id))  # told again (a duplicate signal): nothing more
    assert len(slack.fake.posts(CHANNEL)) == 2


def test_the_first_command_after_a_start_is_acknowledged_in_time_when_slack_is_slow(slack, alice, link):
    """auth.test runs in the background: a Slack slower than 3 s never makes the first ack late."""
    from chatops import bolt

    link(alice, "UALICE")
    bolt.reset_app()
    slack.fake.clear()
    slack.fake.delay = 5
    response, took, _ = _timed(lambda: slack.command("help", wait=False))
    assert took < 2.8  # waited for auth.test at most QUICK_TIMEOUT (2 s), within Slack's 3 s
    assert "still connecting to Slack" in reply_text(response)
    deadline = time.monotonic() + 30
    while bolt._identity is None and time.monotonic() < deadline:  # the background auth.test answers
        time.sleep(0.05)
    assert bolt._identity is not None and bolt._identity.team_id
    response, took, _ = _timed(lambda: slack.command("help", wait=False))
    assert took < 1.0 and "/vm create NAME" in reply_text(response)
    assert len(slack.fake.api("auth.test")) == 1
