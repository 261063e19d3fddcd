"""External-plugin jobs reach Slack like the portal's own (issue #14, part 5): the VM owner's linked Slack
user, subscribed through a signed `/vm subscribe me jobs`, gets the end of a plugin's job on their VM by
direct message from the fake Slack Web API; someone who may not see the VM hears nothing."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from portal.plugins import plugin_token_create
from vms.services import vm_create

from .conftest import reply_text

pytestmark = pytest.mark.django_db(transaction=True)


def test_plugin_job_end_is_sent_to_the_vm_owners_slack_user(slack, alice, bob, link, test_host, small_flavor):
    link(alice, "UALICE")
    link(bob, "UBOB")
    assert "You'll get direct messages" in reply_text(slack.command("subscribe me jobs"))
    assert "You'll get direct messages" in reply_text(slack.command("subscribe me jobs", user="UBOB"))
    vm = vm_create(actor=alice, via="web", name="web-1", flavor="small").vm
    _, token = plugin_token_create(actor=None, via="cli", name="backup-agent", all_targets=True)
    plugin = APIClient()
    plugin.credentials(HTTP_AUTHORIZATION=f"Plugin {token}")
    slack.fake.clear()

    job = plugin.post("/api/jobs/external/", {"kind": "external.backup", "target_type": "vm", "target": vm.name},
                      format="json").json()
    plugin.post(f"/api/jobs/external/{job['id']}/progress/", {"progress": 50}, format="json")
    assert slack.fake.posts("UALICE") == []  # nothing until it ends
    assert plugin.post(f"/api/jobs/external/{job['id']}/finish/", {}, format="json").status_code == 200

    [notice] = slack.fake.posts("UALICE")
    assert "✅ Backup of *web-1* finished." in notice.text
    assert "by plugin backup-agent via Plugin" in notice.text
    assert slack.fake.posts("UBOB") == []  # bob may not see alice's VM

    second = plugin.post("/api/jobs/external/", {"kind": "external.backup", "target_type": "vm",
                                                 "target": str(vm.pk)}, format="json").json()
    plugin.post(f"/api/jobs/external/{second['id']}/fail/", {"error": "Tape drive offline"}, format="json")
    failed = slack.fake.posts("UALICE")[-1]
    assert "❌ Backup of *web-1* failed: Tape drive offline" in failed.text
    assert slack.fake.posts("UBOB") == []
