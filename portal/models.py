"""Core models every app may use: jobs and the audit trail."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from .choices import JobStatus, Via


class PluginToken(models.Model):
    """An external plugin's credential (portal.plugins): only its hash is stored; revoked tokens stay for
    the record (their jobs keep naming them). `all_targets` or `groups` say where it may attach jobs."""

    name = models.CharField(max_length=64, help_text="The plugin's name, shown as who started its jobs.")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=12, editable=False, help_text="The token's first characters, to tell it apart.")
    all_targets = models.BooleanField(default=False, help_text="May attach jobs to every VM and host.")
    groups = models.ManyToManyField("auth.Group", blank=True, related_name="plugin_tokens",
                                    help_text="Without all targets: the VMs of these groups only (no hosts).")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["name"], condition=models.Q(revoked_at__isnull=True),
                                               name="plugin_token_one_active_per_name")]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…{', revoked' if self.revoked_at else ''})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Job(models.Model):
    """A long operation: created with its audit event in the record phase, run by a worker."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=64, db_index=True)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING, db_index=True)
    progress = models.PositiveSmallIntegerField(default=0)
    step = models.CharField(max_length=200, blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="jobs")
    via = models.CharField(max_length=16, choices=Via.choices, default=Via.SYSTEM)
    target_type = models.CharField(max_length=32, blank=True)
    target_id = models.CharField(max_length=64, blank=True, db_index=True)
    target_name = models.CharField(max_length=200, blank=True)
    params = models.JSONField(default=dict, blank=True)
    # A batch's parent job (e.g. vm.bulk_create): it finishes when all its children have (portal.jobs.batches).
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    # For administrators only: the hypervisor's own words behind `error` (libvirt text, URIs, paths).
    error_detail = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    log = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=2)
    worker = models.CharField(max_length=100, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    # External-plugin jobs (portal.jobs.external): run by the plugin, not by a worker; only it updates them.
    external = models.BooleanField(default=False)
    plugin = models.ForeignKey(PluginToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    cancellable = models.BooleanField(default=False, help_text="Its owner may ask the plugin to cancel it.")
    cancel_requested_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["target_type", "target_id", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.target_name} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in JobStatus.ACTIVE

    @property
    def started_by(self) -> str:
        """Who started the job, in words: its user, its plugin, or the system."""
        if self.actor_id and self.actor is not None:
            return self.actor.get_username()
        if self.plugin_id and self.plugin is not None:
            return f"plugin {self.plugin.name}"
        return "system"

    @property
    def cancel_requested(self) -> bool:
        return self.cancel_requested_at is not None

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class AuditEvent(models.Model):
    """Who did what, through which door, to what, and how it ended. Append-only."""

    class Outcome(models.TextChoices):
        REQUESTED = "requested", "Requested"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        DENIED = "denied", "Denied"

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="audit_events")
    actor_name = models.CharField(max_length=150, blank=True)
    via = models.CharField(max_length=16, choices=Via.choices)
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=32, blank=True)
    target_id = models.CharField(max_length=64, blank=True, db_index=True)
    target_name = models.CharField(max_length=200, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.SUCCEEDED)
    message = models.TextField(blank=True)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events")
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action} {self.target_name}"
