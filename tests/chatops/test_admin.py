"""Admin pages of chatops, and the Socket Mode command's configuration errors."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from chatops.models import SlackIdentity
from portal.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_admin_lists_identities_and_unlinks_through_the_service(client, admin_user, alice, link):
    identity = link(alice, "UALICE")
    client.force_login(admin_user)
    page = client.get("/admin/chatops/slackidentity/")
    assert page.status_code == 200 and "UALICE" in page.content.decode()
    done = client.post("/admin/chatops/slackidentity/", {"action": "unlink", "_selected_action": [identity.pk]},
                       follow=True)
    assert "Unlinked UALICE from alice." in done.content.decode()
    assert not SlackIdentity.objects.exists()
    event = AuditEvent.objects.get(action="slack.unlink")
    assert (event.actor, event.via, event.data["slack_user"]) == (admin_user, "admin", "UALICE")


@pytest.mark.parametrize("path", ["/admin/chatops/slackrequest/", "/admin/chatops/linktoken/",
                                  "/admin/chatops/jobwatch/", "/admin/chatops/subscription/",
                                  "/admin/chatops/quotarequestpost/"])
def test_admin_troubleshooting_pages_load(client, admin_user, path):
    client.force_login(admin_user)
    assert client.get(path).status_code == 200


def test_socket_mode_needs_an_app_token(settings):
    settings.SLACK_APP_TOKEN = None
    with pytest.raises(CommandError, match="PORTAL_SLACK_APP_TOKEN"):
        call_command("slack_socket_mode")


def test_socket_mode_needs_slack_configured(settings):
    settings.SLACK_APP_TOKEN = "xapp-1"
    settings.SLACK_BOT_TOKEN = None
    with pytest.raises(CommandError, match="not configured"):
        call_command("slack_socket_mode")
