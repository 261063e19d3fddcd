"""Quota requests decided on the web are told in Slack (chatops subscribes to the quota signals)."""

from __future__ import annotations

import pytest

from chatops.notifications import on_quota_request_created, on_quota_request_decided
from quotas.models import QuotaRequest
from quotas.services import quota_request_create

pytestmark = pytest.mark.django_db


def test_web_decision_is_told_in_slack(client, slack, alice, admin_user, link):
    link(alice, "UALICE")
    request = quota_request_create(actor=alice, via="web", max_vms=5)
    # on_commit does not fire inside the test transaction: run the created notice by hand.

    on_quota_request_created(sender=QuotaRequest, quota_request=request)
    [post] = slack.fake.posts("CADMINS")
    client.force_login(admin_user)

    client.post(f"/quotas/requests/{request.pk}/deny/", {"note": "budget"})
    request.refresh_from_db()
    on_quota_request_decided(sender=QuotaRequest, quota_request=request)
    [update] = slack.fake.api("chat.update")
    assert update.body["ts"] == post.ts and "denied by root-admin" in update.text and ">budget" in update.text
    [dm] = slack.fake.posts("UALICE")
    assert "was denied by root-admin" in dm.text
