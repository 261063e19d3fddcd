"""Choice classes shared across apps; states come with named groups, never magic values."""

from typing import ClassVar

from django.db import models


class Via(models.TextChoices):
    """Which door an action came through (every audit row and job says it)."""

    WEB = "web", "Web portal"
    API = "api", "REST API"
    CONSOLE = "console", "Console"
    ADMIN = "admin", "Admin"
    SLACK = "slack", "Slack"
    CLI = "cli", "Command line"
    PLUGIN = "plugin", "Plugin"
    SYSTEM = "system", "System"


class JobStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"  # expected failure, shown to the user
    ERRORED = "errored", "Errored"  # a bug: traceback kept for admins
    CANCELLED = "cancelled", "Cancelled"

    ACTIVE: ClassVar[tuple[str, ...]]
    FINISHED: ClassVar[tuple[str, ...]]


JobStatus.ACTIVE = (JobStatus.PENDING, JobStatus.RUNNING)
JobStatus.FINISHED = (
    JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.ERRORED, JobStatus.CANCELLED)
