"""VM and host states, with the named groups the rules are written in."""

from django.db import models


class VMStatus(models.TextChoices):
    CREATING = "creating", "Creating"
    STOPPED = "stopped", "Stopped"
    STARTING = "starting", "Starting"
    RUNNING = "running", "Running"
    STOPPING = "stopping", "Stopping"
    REBOOTING = "rebooting", "Rebooting"
    PAUSED = "paused", "Paused"
    DELETING = "deleting", "Deleting"
    ERROR = "error", "Error"
    DELETED = "deleted", "Deleted"


# Every state that still holds resources counts against the quota.
VMStatus.COUNTED = tuple(s for s in VMStatus if s != VMStatus.DELETED)  # type: ignore[attr-defined]
# A job owns the VM while it is in one of these; events only record what libvirt says.
VMStatus.TRANSITIONAL = (  # type: ignore[attr-defined]
    VMStatus.CREATING, VMStatus.STARTING, VMStatus.STOPPING, VMStatus.REBOOTING, VMStatus.DELETING)
VMStatus.ACTIVE = (VMStatus.RUNNING, VMStatus.PAUSED)  # type: ignore[attr-defined]


class SnapshotStatus(models.TextChoices):
    CREATING = "creating", "Taking"
    READY = "ready", "Ready"
    REVERTING = "reverting", "Reverting"
    DELETING = "deleting", "Deleting"


SnapshotStatus.BUSY = (  # type: ignore[attr-defined]
    SnapshotStatus.CREATING, SnapshotStatus.REVERTING, SnapshotStatus.DELETING)
