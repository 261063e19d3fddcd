"""/slack/events only acts on requests signed by Slack: signature, replay window, headers, configuration."""

from __future__ import annotations

import time

import pytest

from chatops.checks import slack_settings_check
from portal.models import AuditEvent, Job
from vms.models import VM

from .conftest import reply_text, sign

pytestmark = pytest.mark.django_db


def _nothing_happened(fake) -> None:
    assert VM.objects.count() == 0
    assert Job.objects.count() == 0
    assert fake.said() == []


def test_correctly_signed_command_is_answered(slack, alice, link):
    link(alice, "UALICE")
    response = slack.command("help")
    assert response.status_code == 200
    assert "/vm create NAME" in reply_text(response)
    # Bolt asked Slack who the bot is, once, with the bot token.
    auth = slack.fake.api("auth.test")
    assert len(auth) == 1 and auth[0].headers["authorization"] == "Bearer xoxb-test-token"


def test_bad_signature_gets_401_and_nothing_happens(slack, alice, link, test_host, small_flavor):
    link(alice, "UALICE")
    body = slack.command_body("create web-1 --flavor small")
    response = slack.post(body, secret="not-the-signing-secret")
    assert response.status_code == 401
    _nothing_happened(slack.fake)


def test_tampered_body_gets_401(slack, alice, link, test_host, small_flavor):
    link(alice, "UALICE")
    body = slack.command_body("list")
    headers = sign(body)
    tampered = body.replace("list", "create+web-1+--flavor+small")
    response = slack.client.post("/slack/events", data=tampered, content_type="application/x-www-form-urlencoded",
                                 headers=headers)
    assert response.status_code == 401
    _nothing_happened(slack.fake)


def test_replayed_request_older_than_five_minutes_gets_401(slack, alice, link, test_host, small_flavor):
    link(alice, "UALICE")
    body = slack.command_body("create web-1 --flavor small")
    response = slack.post(body, timestamp=int(time.time()) - 6 * 60)
    assert response.status_code == 401
    _nothing_happened(slack.fake)


def test_missing_signature_headers_get_401(slack, alice, link):
    link(alice, "UALICE")
    body = slack.command_body("list")
    assert slack.post(body, signed=False).status_code == 401
    only_ts = {"X-Slack-Request-Timestamp": str(int(time.time()))}
    assert slack.post(body, signed=False, headers=only_ts).status_code == 401
    assert slack.fake.said() == []


def test_ssl_check_is_answered_with_an_empty_200_and_does_nothing(slack):
    response = slack.post("ssl_check=1&token=legacy-verification-token")
    assert response.status_code == 200
    assert response.content == b""
    # Nothing is sent to Slack. (Bolt's own identity check, auth.test, runs in the background when the app
    # starts and may land during this test: it is not something the ssl_check did.)
    assert [c for c in slack.fake.calls if c.method != "auth.test"] == []


def test_get_is_not_allowed(slack):
    assert slack.client.get("/slack/events").status_code == 405


def test_endpoint_is_404_when_slack_is_not_configured(client, settings):
    settings.SLACK_BOT_TOKEN = None
    settings.SLACK_SIGNING_SECRET = None
    response = client.post("/slack/events", data="text=list", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 404
    assert b"Slack is not configured" in response.content


def test_token_without_signing_secret_is_a_start_up_error(client, settings):
    settings.SLACK_BOT_TOKEN = "xoxb-1"
    settings.SLACK_SIGNING_SECRET = ""
    errors = [e for e in slack_settings_check(None) if e.id == "chatops.E001"]
    assert len(errors) == 1
    assert "PORTAL_SLACK_SIGNING_SECRET" in errors[0].msg
    # And the endpoint refuses to run unverified rather than skipping the signature check.
    response = client.post("/slack/events", data="text=list", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 503


def test_signing_secret_without_token_only_warns(settings):
    settings.SLACK_BOT_TOKEN = None
    settings.SLACK_SIGNING_SECRET = "s"
    ids = [e.id for e in slack_settings_check(None)]
    assert ids == ["chatops.W001"]


def test_command_from_an_unknown_workspace_is_refused(slack, alice, link, test_host, small_flavor):
    link(alice, "UALICE", team="TOTHER")
    response = slack.command("create web-1 --flavor small", team="TOTHER")
    assert "not connected to this portal" in reply_text(response)
    assert VM.objects.count() == 0
    assert not AuditEvent.objects.filter(action="vm.create").exists()


def test_click_from_an_unknown_workspace_is_refused(slack, alice, link):
    link(alice, "UALICE", team="TOTHER")
    response = slack.click("quota_approve", "1", team="TOTHER")
    assert response.status_code == 200
    [answer] = slack.fake.responses()
    assert "not connected to this portal" in answer.text


def test_configured_workspace_list_overrides_the_bot_workspace(slack, settings, alice, link):
    settings.SLACK_TEAM_IDS = ["TSECOND"]
    link(alice, "UALICE", team="TSECOND")
    assert "No VMs yet" in reply_text(slack.command("list", team="TSECOND"))
    assert "not connected" in reply_text(slack.command("list"))


def test_manifest_points_slack_at_the_events_endpoint(settings):
    from pathlib import Path

    import yaml

    manifest = yaml.safe_load((Path(settings.BASE_DIR) / "chatops" / "slack-manifest.yaml").read_text())
    [command] = manifest["features"]["slash_commands"]
    assert command["command"] == settings.SLACK_COMMAND
    assert command["url"].endswith("/slack/events")
    assert manifest["settings"]["interactivity"]["request_url"].endswith("/slack/events")
    assert {"commands", "chat:write"} <= set(manifest["oauth_config"]["scopes"]["bot"])


@pytest.mark.django_db(transaction=True)
async def test_endpoint_answers_through_the_asgi_handler_too(async_client, slack):
    """daphne serves the portal: the same signed request works through Django's ASGI handler."""
    body = slack.command_body("help")
    response = await async_client.post("/slack/events", data=body, content_type="application/x-www-form-urlencoded",
                                       headers=sign(body))
    assert response.status_code == 200
    assert "/vm create NAME" in reply_text(response)
    forged = await async_client.post("/slack/events", data=body, content_type="application/x-www-form-urlencoded",
                                     headers=sign(body, secret="wrong"))
    assert forged.status_code == 401
