"""Whole conversations on libvirt's test driver: create -> thread follow-up -> buttons, idempotency,
fallbacks, audit. Jobs run on commit (ImmediateBackend), hence the transactional database.
"""

from __future__ import annotations

import pytest

from chatops.models import JobWatch, SlackRequest, Subscription
from portal.hypervisor import get_driver
from portal.models import AuditEvent, Job
from vms.models import VM

from .conftest import CHANNEL, reply_of, reply_text

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice_linked(alice, link, test_host, small_flavor):
    link(alice, "UALICE")
    return alice


def _create(slack, name="web-1", **kwargs):
    response = slack.command(f"create {name} --flavor small", **kwargs)
    assert response.status_code == 200
    return response


def test_create_announces_in_the_channel_and_follows_up_in_the_thread_with_buttons(slack, alice_linked):
    response = _create(slack)
    assert reply_of(response) == {}  # the channel message says it all
    vm = VM.objects.get(name="web-1")
    assert vm.status == "running" and vm.created_via == "slack"
    job = Job.objects.get(kind="vm.create")
    assert job.via == "slack" and job.status == "succeeded"

    parent, follow_up = slack.fake.posts(CHANNEL)
    assert parent.text.startswith("<@UALICE> is creating *web-1* (1 vCPU · 128 MiB · 1 GiB · test-blank)")
    assert f"job `{str(job.pk)[:8]}`" in parent.text
    assert follow_up.body["thread_ts"] == parent.ts
    assert "<@UALICE> ✅ *web-1* is running." in follow_up.text
    assert [b["text"]["text"] for b in follow_up.buttons] == ["Stop", "Pause", "Console", "Delete"]
    assert follow_up.button("Console")["url"] == f"http://portal.test/consoles/vm/{vm.pk}/screen/"
    assert follow_up.button("Delete")["confirm"]["title"]["text"] == "Delete web-1?"
    assert follow_up.button("Stop")["confirm"]["text"]["text"].startswith("The guest is asked to shut down")


def test_slack_initiated_actions_are_audited_with_slack_user_and_channel(slack, alice_linked):
    _create(slack)
    requested = AuditEvent.objects.get(action="vm.create")
    assert requested.via == "slack" and requested.actor == alice_linked
    assert requested.data["slack_user"] == "UALICE"
    assert requested.data["slack_channel"] == CHANNEL
    assert requested.data["slack_team"] == "T0PORTAL"
    assert requested.data["vcpus"] == 1  # the service's own data is kept


def test_retried_command_creates_one_vm_and_replays_the_answer(slack, alice_linked):
    body = slack.command_body("create web-1 --flavor small")
    first = slack.post(body)
    retry = slack.post(body, headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    assert first.status_code == retry.status_code == 200
    assert VM.objects.filter(name="web-1").count() == 1
    assert Job.objects.filter(kind="vm.create").count() == 1
    assert SlackRequest.objects.filter(kind="command").count() == 1
    # A retry with a fresh signature but the same trigger is not a new request either.
    assert reply_of(retry) == reply_of(first)


def test_same_command_typed_twice_is_two_requests(slack, alice_linked):
    _create(slack)
    text = reply_text(_create(slack))
    assert "You already have a VM named 'web-1'." in text
    assert VM.objects.exclude(status="deleted").count() == 1


def test_double_clicked_button_stops_once(slack, alice_linked):
    _create(slack)
    follow_up = slack.fake.posts(CHANNEL)[-1]
    slack.fake.clear()
    body = slack.click_body("vm_force_off", follow_up.button("Stop")["value"], message_ts=follow_up.ts,
                            thread_ts=follow_up.body["thread_ts"])
    assert slack.post(body).status_code == 200
    assert slack.post(body).status_code == 200
    assert Job.objects.filter(kind="vm.force_off").count() == 1
    answers = [c.text for c in slack.fake.responses()]
    assert any("already handled" in t for t in answers)


def test_slack_retry_of_a_click_acts_once_and_answers_once(slack, alice_linked):
    _create(slack)
    follow_up = slack.fake.posts(CHANNEL)[-1]
    slack.fake.clear()
    body = slack.click_body("vm_stop", follow_up.button("Stop")["value"], message_ts=follow_up.ts,
                            thread_ts=follow_up.body["thread_ts"])
    slack.post(body)
    said = len(slack.fake.said())
    slack.post(body, headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    assert Job.objects.filter(kind="vm.stop").count() == 1
    assert len(slack.fake.said()) == said  # the retry is silent


def test_button_stop_then_delete_in_the_thread(slack, alice_linked):
    _create(slack)
    vm = VM.objects.get(name="web-1")
    parent, follow_up = slack.fake.posts(CHANNEL)
    slack.fake.clear()

    # Stop on the running message: on the test driver the ACPI shutdown is immediate.
    assert slack.click_button(follow_up, "Stop").status_code == 200
    vm.refresh_from_db()
    assert vm.status == "stopped"
    replaced, = slack.fake.responses()
    assert replaced.body["replace_original"] is True
    assert replaced.text.startswith("⏳ Stopping web-1. · job")
    assert "asked by <@UALICE>" in replaced.text
    [stopped] = slack.fake.posts(CHANNEL)
    assert stopped.body["thread_ts"] == parent.ts
    assert "⏹️ *web-1* stopped." in stopped.text
    assert [b["text"]["text"] for b in stopped.buttons] == ["Start", "Delete"]

    slack.fake.clear()
    assert slack.click_button(stopped, "Delete").status_code == 200
    vm.refresh_from_db()
    assert vm.status == "deleted"
    assert not get_driver("test:///default").domain_exists(str(vm.uuid))
    [deleted] = slack.fake.posts(CHANNEL)
    assert "🗑️ *web-1* was deleted with its disks." in deleted.text and deleted.buttons == []
    assert deleted.body["thread_ts"] == parent.ts
    kinds = list(AuditEvent.objects.filter(via="slack", action__in=["vm.stop", "vm.delete"])
                 .values_list("action", "data__slack_user"))
    assert sorted(kinds) == [("vm.delete", "UALICE"), ("vm.stop", "UALICE")]


def test_typed_stop_confirm_button_answers_privately(slack, alice_linked):
    _create(slack)
    slack.fake.clear()
    prompt = reply_of(slack.command("stop web-1"))
    confirm = prompt["blocks"][1]["elements"][0]
    slack.click(confirm["action_id"], confirm["value"], ephemeral=True)
    assert VM.objects.get(name="web-1").status == "stopped"
    replaced, result = slack.fake.responses()
    assert replaced.body["replace_original"] is True and "Stopping web-1" in replaced.text
    assert result.body["response_type"] == "ephemeral" and "⏹️ *web-1* stopped." in result.text
    assert slack.fake.posts() == []


def test_start_of_a_running_vm_is_a_private_no_op(slack, alice_linked):
    _create(slack)
    slack.fake.clear()
    text = reply_text(slack.command("start web-1"))
    assert "web-1 is already running." in text
    assert slack.fake.said() == []
    assert not Job.objects.filter(kind="vm.start").exists()


def test_invalid_state_is_explained_and_the_button_can_be_used_again(slack, alice_linked):
    _create(slack)
    vm = VM.objects.get(name="web-1")
    follow_up = slack.fake.posts(CHANNEL)[-1]
    slack.click_button(follow_up, "Stop")
    slack.fake.clear()
    # The thread's "running" message still has its Stop button in the user's client:
    # a second stop of a stopped VM is refused with the service's reason...
    body = slack.click_body("vm_stop", str(vm.pk), message_ts="1700000000.999999")
    slack.post(body)
    assert "Cannot stop web-1: it is already stopped." in slack.fake.responses()[-1].text
    # ...and, since nothing happened, the same button is not "already handled" later.
    assert not SlackRequest.objects.filter(key__contains="1700000000.999999").exists()


def test_bot_not_in_channel_falls_back_to_response_url(slack, alice_linked):
    slack.fake.not_in_channel.add("CPRIVATE")
    response = _create(slack, channel="CPRIVATE")
    assert reply_of(response) == {}  # the announcement follows the acknowledgement
    announced, follow_up = slack.fake.responses()
    assert announced.body["response_type"] == "in_channel"
    assert "<@UALICE> is creating *web-1*" in announced.text
    assert follow_up.body["response_type"] == "in_channel"
    assert "✅ *web-1* is running." in follow_up.text
    watch = JobWatch.objects.get()
    assert watch.notified_at is not None and watch.thread_ts == ""


def test_over_quota_offers_request_more_and_admin_approval_raises_the_quota(slack, alice_linked, admin_user, link):
    link(admin_user, "UADMIN")
    for n in range(3):
        _create(slack, name=f"web-{n}")
    slack.fake.clear()
    body = reply_of(_create(slack, name="web-3"))
    assert "Quota exceeded for VMs: requested 1, 3 of 3 in use." in body["text"]
    request_more = body["blocks"][1]["elements"][0]
    assert request_more["text"]["text"] == "Request more" and request_more["action_id"] == "quota_request"

    slack.click("quota_request", request_more["value"], ephemeral=True)
    from quotas.models import QuotaRequest

    request = QuotaRequest.objects.get()
    assert (request.requester, request.status, request.max_vms, request.via) == (alice_linked, "pending", 4, "slack")
    [admin_post] = slack.fake.posts("CADMINS")
    assert f"Quota request #{request.pk}* from <@UALICE> (alice): VMs 3 → 4" in admin_post.text
    assert [b["text"]["text"] for b in admin_post.buttons] == ["Approve", "Deny"]
    [sent] = slack.fake.responses()
    assert f"Quota request #{request.pk} was posted to the administrators" in sent.text

    # A non-admin's click on Approve changes nothing.
    slack.fake.clear()
    slack.click("quota_approve", str(request.pk), channel="CADMINS", message_ts=admin_post.ts)
    assert "Only administrators can decide quota requests." in slack.fake.responses()[-1].text
    request.refresh_from_db()
    assert request.status == "pending"

    # The admin approves: quota raised through the service, post closed, requester told.
    slack.fake.clear()
    slack.click("quota_approve", str(request.pk), user="UADMIN", channel="CADMINS", message_ts=admin_post.ts)
    request.refresh_from_db()
    assert request.status == "approved" and request.decided_by == admin_user
    alice_linked.quota.refresh_from_db()
    assert alice_linked.quota.max_vms == 4
    [update] = slack.fake.api("chat.update")
    assert update.body["ts"] == admin_post.ts and "approved by <@UADMIN> (root-admin)" in update.text
    assert update.buttons == []
    [dm] = slack.fake.posts("UALICE")
    assert f"Your quota request #{request.pk} was approved" in dm.text
    assert AuditEvent.objects.filter(action="quota.update", via="slack", actor=admin_user).exists()
    assert AuditEvent.objects.get(action="quota_request.approve").data["slack_user"] == "UADMIN"

    # A second click on Approve (double click, or another admin) does nothing more.
    slack.fake.clear()
    slack.click("quota_approve", str(request.pk), user="UADMIN", channel="CADMINS", message_ts="1.2")
    assert "was already approved by root-admin" in slack.fake.responses()[-1].text
    # And the create that was refused now goes through.
    _create(slack, name="web-3")
    assert VM.objects.get(name="web-3").status == "running"


def test_quota_request_command_posts_for_the_admins(slack, alice_linked):
    text = reply_text(slack.command("quota request --vms 5 --memory 4096 for the demo"))
    assert "was posted to the administrators: VMs 3 → 5, Memory 2048 → 4096 MiB" in text
    [post] = slack.fake.posts("CADMINS")
    assert ">for the demo" in post.text
    assert "pending quota request" in reply_text(slack.command("quota request --vms 6"))


def test_subscribed_channel_hears_of_jobs_from_other_doors(slack, alice_linked):
    from vms.services import vm_create

    Subscription.objects.create(team_id="T0PORTAL", channel_id="CTEAM", owner=alice_linked,
                                events=["job.succeeded", "job.failed"])
    vm_create(actor=alice_linked, via="web", name="from-web", flavor="small")
    [notice] = slack.fake.posts("CTEAM")
    assert "✅ *from-web* is running." in notice.text and "by alice via Web portal" in notice.text


def test_subscriptions_only_see_what_their_owner_may_see(slack, alice_linked, bob):
    from vms.services import vm_create

    Subscription.objects.create(team_id="T0PORTAL", channel_id="CBOB", owner=bob, events=["job.succeeded"])
    vm_create(actor=alice_linked, via="web", name="private", flavor="small")
    assert slack.fake.posts("CBOB") == []


def test_state_changed_outside_the_portal_is_told_to_subscribers(slack, alice_linked):
    from portal.hypervisor import PowerState
    from vms.reconcile import vm_observe

    _create(slack)
    vm = VM.objects.get(name="web-1")
    Subscription.objects.create(team_id="T0PORTAL", channel_id="CTEAM", owner=alice_linked, events=["vm.state"])
    slack.fake.clear()
    vm_observe(vm=vm, state=PowerState.SHUTOFF, source="event")
    [notice] = slack.fake.posts("CTEAM")
    assert "⚠️ *web-1* changed outside the portal" in notice.text and "Stopped" in notice.text


def test_job_failure_is_reported_in_the_thread(slack, alice_linked):
    _create(slack)
    vm = VM.objects.get(name="web-1")
    parent, follow_up = slack.fake.posts(CHANNEL)
    # The domain disappears behind the portal's back; the stop job then fails on the host.
    driver = get_driver("test:///default")
    driver.destroy(str(vm.uuid))
    driver.undefine(str(vm.uuid))
    slack.fake.clear()
    slack.click_button(follow_up, "Stop")
    job = Job.objects.get(kind="vm.stop")
    assert job.status == "failed"
    [result] = slack.fake.posts(CHANNEL)
    assert result.text.startswith("<@UALICE> ❌ Stop of *web-1* failed: ")
    assert result.body["thread_ts"] == parent.ts


def _accessories(call_or_body) -> list[dict]:
    body = call_or_body.body if hasattr(call_or_body, "body") else call_or_body
    blocks = body.get("blocks") or []
    if isinstance(blocks, str):
        import json

        blocks = json.loads(blocks)
    return [b["accessory"] for b in blocks if "accessory" in b]


def test_snapshot_list_and_revert_from_slack(slack, alice_linked):
    _create(slack)
    vm = VM.objects.get(name="web-1")
    slack.fake.clear()

    assert slack.command("snapshot web-1 before-upgrade").status_code == 200
    snap = vm.snapshots.get()
    assert snap.status == "ready" and snap.has_memory and snap.created_via == "slack"
    parent, done = slack.fake.posts(CHANNEL)
    assert "Taking snapshot before-upgrade of web-1." in parent.text and "asked by <@UALICE>" in parent.text
    assert done.body["thread_ts"] == parent.ts
    assert "📸 Snapshot `before-upgrade` of *web-1* taken." in done.text
    assert AuditEvent.objects.get(action="vm.snapshot.create").data["slack_user"] == "UALICE"

    listing = reply_of(slack.command("snapshots web-1"))
    assert "before-upgrade" in reply_text(slack.command("snapshots web-1"))
    [revert] = _accessories(listing)
    assert revert["text"]["text"] == "Revert" and revert["confirm"]["title"]["text"] == "Revert web-1 to before-upgrade?"

    prompt = reply_of(slack.command("revert web-1 before-upgrade"))
    assert "Everything that changed since the snapshot was taken is lost." in prompt["text"]
    confirm = prompt["blocks"][1]["elements"][0]
    assert confirm["value"] == revert["value"]
    get_driver("test:///default").destroy(str(vm.uuid))  # powered off since the snapshot
    slack.fake.clear()
    slack.click(confirm["action_id"], confirm["value"], ephemeral=True)
    vm.refresh_from_db()
    assert vm.status == "running"  # back to the running snapshot
    assert Job.objects.get(kind="vm.snapshot.revert").via == "slack"
    texts = [c.text for c in slack.fake.responses()]
    assert any("Reverting web-1 to snapshot before-upgrade" in t for t in texts)
    assert any("⏪ *web-1* was reverted to snapshot `before-upgrade`." in t for t in texts)


def test_snapshot_errors_are_clear_replies(slack, alice_linked, bob, link):
    _create(slack)
    assert "Invalid snapshot name 'a&lt;b'" in reply_text(slack.command("snapshot web-1 'a<b'"))
    assert "has no snapshot 'nope'" in reply_text(slack.command("revert web-1 nope"))
    link(bob, "UBOB")
    assert "No VM named 'web-1'" in reply_text(slack.command("snapshot web-1", user="UBOB"))
    assert not VM.objects.get(name="web-1").snapshots.exists()


def test_grow_disk_from_slack_uses_the_same_rules(slack, alice_linked):
    _create(slack)
    assert "Disk must be between 1 and" in reply_text(slack.command("grow-disk web-1 0"))
    assert "cannot grow disks" in reply_text(slack.command("grow-disk web-1 5"))  # the test driver cannot
    assert VM.objects.get(name="web-1").disk_gib == 1


def test_create_from_a_template_takes_its_sizes_and_clone_full(slack, alice_linked):
    """`/vm create NAME image=TEMPLATE clone=full`: no flavor needed, the template's sizes are used."""
    from storage.models import Image
    from vms.services import vm_create, vm_template_create

    source = vm_create(actor=alice_linked, via="api", name="web-1", vcpus=1, memory_mib=128, disk_gib=1,
                       start=False).vm
    vm_template_create(actor=alice_linked, via="api", vm=source, name="tpl-web")
    assert Image.objects.get(name="tpl-web").kind == "template"
    response = slack.command("create web-2 image=tpl-web clone=full")
    assert response.status_code == 200
    vm = VM.objects.get(name="web-2")
    assert vm.status == "running" and vm.created_via == "slack"
    assert (vm.vcpus, vm.memory_mib, vm.disk_gib) == (1, 128, 1)
    assert vm.disks.get(target="vda").volume.copy_of.name == "tpl-web"


def test_subscribed_channel_hears_of_a_template_made_on_the_web(slack, alice_linked):
    from vms.services import vm_create, vm_template_create

    source = vm_create(actor=alice_linked, via="api", name="web-1", flavor="small", start=False).vm
    Subscription.objects.create(team_id="T0PORTAL", channel_id="CTEAM", owner=alice_linked,
                                events=["job.succeeded", "job.failed"])
    vm_template_create(actor=alice_linked, via="web", vm=source, name="tpl-web")
    [notice] = slack.fake.posts("CTEAM")
    assert "Template `tpl-web` made from *web-1*." in notice.text and "by alice via Web portal" in notice.text
