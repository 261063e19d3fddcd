"""Shapes of the console API: what a client sends for a one-time console link and what it gets back."""

from __future__ import annotations

from rest_framework import serializers

from consoles.services import CONSOLE_LINK_KINDS
from portal.api import ErrorSerializer


class ConsoleLinkRequestSerializer(serializers.Serializer):
    """Which console page the link opens."""

    kind = serializers.ChoiceField(choices=CONSOLE_LINK_KINDS, default="screen",
                                   help_text="`screen` (the display, noVNC) or `terminal` (the serial console).")


class ConsoleLinkSerializer(serializers.Serializer):
    """A one-time console URL: for the user who asked, usable once, until `expires_at`."""

    url = serializers.URLField(help_text="Open it in a browser signed in to the portal as you; it works once.")
    kind = serializers.ChoiceField(choices=CONSOLE_LINK_KINDS)
    expires_at = serializers.DateTimeField()
    expires_in = serializers.IntegerField(help_text="Seconds until the link expires.")


class RateLimitedErrorSerializer(ErrorSerializer):
    """429: too many console requests; also sent as the Retry-After header."""

    retry_after = serializers.IntegerField(help_text="Seconds to wait before asking again.")
