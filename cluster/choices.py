"""Host states and domain types."""

from django.db import models


class HostStatus(models.TextChoices):
    UP = "up", "Up"
    DOWN = "down", "Down"
    MAINTENANCE = "maintenance", "Maintenance"
    UNKNOWN = "unknown", "Unknown"


class DomainType(models.TextChoices):
    AUTO = "auto", "Auto (KVM where it boots a guest, else QEMU)"
    KVM = "kvm", "KVM"
    QEMU = "qemu", "QEMU (emulation)"
