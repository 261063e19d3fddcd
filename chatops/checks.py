"""System checks: Slack settings that cannot work stop `manage.py check`, `migrate`, `runportal`."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Warning, register


@register("chatops")
def slack_settings_check(app_configs, **kwargs):
    from .bolt import misconfiguration  # bolt imports the handlers and their models: after app loading

    problems = []
    problem = misconfiguration()
    if problem:
        problems.append(Error(
            problem, id="chatops.E001",
            hint="Copy the Signing Secret from your Slack app's Basic Information page into "
                 "PORTAL_SLACK_SIGNING_SECRET, or unset PORTAL_SLACK_BOT_TOKEN to turn Slack off."))
    if settings.SLACK_SIGNING_SECRET and not settings.SLACK_BOT_TOKEN:
        problems.append(Warning(
            "PORTAL_SLACK_SIGNING_SECRET is set without PORTAL_SLACK_BOT_TOKEN: the Slack bot stays off.",
            id="chatops.W001", hint="Set PORTAL_SLACK_BOT_TOKEN (xoxb-...) from the app's OAuth page."))
    if settings.SLACK_BOT_TOKEN and not settings.SLACK_ADMIN_CHANNEL:
        problems.append(Warning(
            "PORTAL_SLACK_ADMIN_CHANNEL is not set: quota requests are not posted to Slack.",
            id="chatops.W002", hint="Set it to the channel id (C...) of the administrators' channel."))
    return problems
