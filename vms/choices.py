"""VM and host states, with the named groups the rules are written in."""

from typing import ClassVar

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
    MIGRATING = "migrating", "Migrating"
    UNKNOWN = "unknown", "Unknown (host unreachable)"
    ERROR = "error", "Error"
    DELETED = "deleted", "Deleted"

    # Named groups (set below the class; annotated here so they are not enum members).
    COUNTED: ClassVar[tuple[str, ...]]
    TRANSITIONAL: ClassVar[tuple[str, ...]]
    ACTIVE: ClassVar[tuple[str, ...]]


# Every state that still holds resources counts against the quota.
VMStatus.COUNTED = tuple(s for s in VMStatus if s != VMStatus.DELETED)
# A job owns the VM while it is in one of these; events only record what libvirt says.
VMStatus.TRANSITIONAL = (
    VMStatus.CREATING, VMStatus.STARTING, VMStatus.STOPPING, VMStatus.REBOOTING, VMStatus.DELETING,
    VMStatus.MIGRATING)
VMStatus.ACTIVE = (VMStatus.RUNNING, VMStatus.PAUSED)


class SnapshotStatus(models.TextChoices):
    CREATING = "creating", "Taking"
    READY = "ready", "Ready"
    REVERTING = "reverting", "Reverting"
    DELETING = "deleting", "Deleting"

    BUSY: ClassVar[tuple[str, ...]]


SnapshotStatus.BUSY = (
    SnapshotStatus.CREATING, SnapshotStatus.REVERTING, SnapshotStatus.DELETING)
