"""Host states and domain types."""

from typing import ClassVar

from django.db import models


class HostStatus(models.TextChoices):
    UP = "up", "Up"
    PREPARING_FOR_MAINTENANCE = "preparing", "Preparing for maintenance"
    MAINTENANCE = "maintenance", "Maintenance"
    NON_RESPONSIVE = "non_responsive", "Non-responsive"
    STANDBY = "standby", "Standby (powered down to save power)"
    DOWN = "down", "Down"
    UNKNOWN = "unknown", "Unknown"

    # Named groups (set below the class; annotated here so they are not enum members).
    PLACEABLE: ClassVar[tuple[str, ...]]
    REACHABLE: ClassVar[tuple[str, ...]]
    UNREACHABLE: ClassVar[tuple[str, ...]]


# New VMs (and VMs moving in) land only on these.
HostStatus.PLACEABLE = (HostStatus.UP,)
# libvirt answers: actions on the host's VMs may go ahead.
HostStatus.REACHABLE = (HostStatus.UP, HostStatus.PREPARING_FOR_MAINTENANCE, HostStatus.MAINTENANCE)
# The portal cannot tell what runs there: the host's VMs are shown as unknown, their actions refused.
HostStatus.UNREACHABLE = (HostStatus.NON_RESPONSIVE, HostStatus.DOWN, HostStatus.STANDBY, HostStatus.UNKNOWN)


class ClusterPolicy(models.TextChoices):
    """Built-in scheduling policies (cluster.scheduler.policies); plugins may add more by name."""

    NONE = "none", "None (first fit, no balancing)"
    EVENLY_DISTRIBUTED = "evenly_distributed", "Evenly distributed"
    POWER_SAVING = "power_saving", "Power saving"
    VM_COUNT = "vm_count", "VM count (even number of VMs per host)"


class DomainType(models.TextChoices):
    AUTO = "auto", "Auto (KVM where it boots a guest, else QEMU)"
    KVM = "kvm", "KVM"
    QEMU = "qemu", "QEMU (emulation)"
