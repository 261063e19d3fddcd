"""Console kinds, tiers and the owner's serial-sharing choice."""

from django.db import models


class ConsoleKind(models.TextChoices):
    SCREEN = "screen", "Screen (VNC)"
    SERIAL = "serial", "Serial terminal"


class ConsoleTier(models.TextChoices):
    """Which relay carried a session: daphne/Channels on the portal's origin, or the websockify proxy."""

    CHANNELS = "channels", "Portal (Channels)"
    WEBSOCKIFY = "websockify", "Console proxy (websockify)"


class SerialSharing(models.TextChoices):
    """What happens when a second person opens a VM's serial terminal while one is in use."""

    REFUSE = "refuse", "Refuse a second viewer"
    READ_ONLY = "read_only", "Let a second viewer watch, read-only"


class SessionRole(models.TextChoices):
    CONTROL = "control", "Control"  # input goes to the guest
    WATCH = "watch", "Watch (read-only)"  # share links and serial watchers: input is dropped
