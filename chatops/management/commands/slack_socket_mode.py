"""Serve the Slack bot over Socket Mode: for workspaces that cannot reach the portal over HTTP.

Needs PORTAL_SLACK_APP_TOKEN (xapp-..., an app-level token with connections:write) besides the bot
token and signing secret; the same listeners as HTTP mode answer.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Connect to Slack over Socket Mode and answer /vm commands and buttons until interrupted."

    def handle(self, *args, **options):
        from chatops.bolt import get_app  # noqa: I001  (only this command needs Bolt's app)

        if not settings.SLACK_APP_TOKEN:
            raise CommandError("PORTAL_SLACK_APP_TOKEN (xapp-...) is needed for Socket Mode; see docs/slack.md.")
        app = get_app()
        if app is None:
            raise CommandError("Slack is not configured: set PORTAL_SLACK_BOT_TOKEN and PORTAL_SLACK_SIGNING_SECRET.")
        from slack_bolt.adapter.socket_mode import SocketModeHandler  # its websocket client: only when used

        self.stdout.write(self.style.SUCCESS("Connecting to Slack over Socket Mode (Ctrl-C stops)"))
        SocketModeHandler(app, settings.SLACK_APP_TOKEN).start()
