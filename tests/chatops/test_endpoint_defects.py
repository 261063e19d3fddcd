"""/slack/events refuses a malformed X-Slack-Request-Timestamp itself (401, plain), before Bolt's int()."""

from __future__ import annotations

import pytest

from portal.models import Job
from vms.models import VM

from .conftest import sign

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("timestamp", ["abc", "", " ", "12.5", "-1", "1e9", "١٧٠٠٠٠٠٠٠٠", "9" * 40])
@pytest.mark.parametrize("signature", ["valid", "bogus"])
def test_malformed_timestamp_is_a_plain_401_and_nothing_happens(slack, alice, link, test_host, small_flavor,
                                                                timestamp, signature):
    link(alice, "UALICE")
    body = slack.command_body("create web-1 --flavor small")
    headers = sign(body) if signature == "valid" else {"X-Slack-Signature": "v0=" + "0" * 64}
    headers["X-Slack-Request-Timestamp"] = timestamp
    response = slack.client.post("/slack/events", data=body, content_type="application/x-www-form-urlencoded",
                                 headers=headers)
    assert response.status_code == 401
    assert response["Content-Type"].startswith("text/plain")
    assert response.content == b"Invalid Slack request signature."
    assert VM.objects.count() == 0 and Job.objects.count() == 0
    assert slack.fake.calls == []  # Bolt never saw it (not even its auth.test)


def test_missing_timestamp_is_the_same_plain_401(slack, alice, link):
    link(alice, "UALICE")
    body = slack.command_body("list")
    response = slack.post(body, signed=False, headers={"X-Slack-Signature": "v0=" + "0" * 64})
    assert response.status_code == 401
    assert response.content == b"Invalid Slack request signature."


def test_well_formed_but_stale_timestamp_is_still_bolts_401(slack, alice, link):
    """Digits pass the shape check; the age and the signature are still verified by Bolt."""
    link(alice, "UALICE")
    body = slack.command_body("list")
    response = slack.post(body, timestamp=1)
    assert response.status_code == 401
    assert slack.fake.said() == []
