"""Slack identities, one-time link tokens, idempotency records, job watches and subscriptions.

(One-time console links, which `/vm console` hands out, are consoles.models.ConsoleLink.)
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class SlackIdentity(models.Model):
    """A Slack user (workspace id + user id, never a display name) linked to one portal account."""

    team_id = models.CharField("workspace id", max_length=32)
    slack_user_id = models.CharField("Slack user id", max_length=32)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="slack_identities")
    slack_name = models.CharField(max_length=100, blank=True, help_text="Display name when linked (shown only).")
    linked_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "Slack identity"
        verbose_name_plural = "Slack identities"
        ordering = ["team_id", "slack_user_id"]
        constraints = [models.UniqueConstraint(fields=["team_id", "slack_user_id"], name="slack_identity_unique")]

    def __str__(self) -> str:
        return f"{self.team_id}/{self.slack_user_id} → {self.user}"


class LinkToken(models.Model):
    """A one-time, short-lived link from a Slack user to the portal page that confirms the link.

    Only the SHA-256 of the token is stored: the database never holds a usable link.
    """

    token_hash = models.CharField(max_length=64, unique=True)
    team_id = models.CharField(max_length=32)
    slack_user_id = models.CharField(max_length=32)
    slack_name = models.CharField(max_length=100, blank=True)
    response_url = models.URLField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    used_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="+")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"link for {self.team_id}/{self.slack_user_id} ({'used' if self.used_at else 'open'})"


class SlackRequest(models.Model):
    """Idempotency record: one row per Slack request or click that acts; its key is unique.

    A retried slash command (same trigger id) or a second click on the same button finds the row
    and does nothing again.
    """

    key = models.CharField(max_length=255, unique=True)
    kind = models.CharField(max_length=16)
    team_id = models.CharField(max_length=32)
    slack_user_id = models.CharField(max_length=32)
    summary = models.CharField(max_length=200, blank=True)
    reply = models.JSONField(default=dict, blank=True, help_text="What was answered; replayed to a retry.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.key


class JobWatch(models.Model):
    """A Slack conversation that waits for a job: told in its thread (or via response_url) when it ends."""

    job = models.ForeignKey("portal.Job", on_delete=models.CASCADE, related_name="slack_watches")
    team_id = models.CharField(max_length=32)
    channel_id = models.CharField(max_length=32, blank=True)
    slack_user_id = models.CharField(max_length=32)
    thread_ts = models.CharField(max_length=32, blank=True)
    response_url = models.URLField(max_length=500, blank=True)
    ephemeral = models.BooleanField(default=False, help_text="Tell only the user (via response_url).")
    created_at = models.DateTimeField(auto_now_add=True)
    notified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"watch of job {self.job_id} in {self.channel_id or 'response_url'}"


class Subscription(models.Model):
    """Optional notifications to a Slack channel (or a user's DM), limited to what `owner` may see."""

    class Event(models.TextChoices):
        JOB_SUCCEEDED = "job.succeeded", "Job finished"
        JOB_FAILED = "job.failed", "Job failed"
        VM_STATE = "vm.state", "VM state changed outside the portal"
        HOST_DOWN = "host.down", "Host down (administrators)"

    team_id = models.CharField(max_length=32)
    channel_id = models.CharField(max_length=32, help_text="A channel id, or a user id for direct messages.")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="slack_subscriptions",
                              help_text="Whose view of the portal decides what is sent.")
    events = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["team_id", "channel_id"]
        constraints = [models.UniqueConstraint(fields=["team_id", "channel_id", "owner"],
                                               name="slack_subscription_unique")]

    def __str__(self) -> str:
        return f"{self.channel_id}: {', '.join(self.events)} (as {self.owner})"

    @property
    def is_direct(self) -> bool:
        return self.channel_id.startswith(("U", "W"))


class QuotaRequestPost(models.Model):
    """Where a quota request was posted for the admins, so the decision can update that message."""

    quota_request = models.OneToOneField("quotas.QuotaRequest", on_delete=models.CASCADE, related_name="slack_post")
    channel_id = models.CharField(max_length=32)
    ts = models.CharField(max_length=32)
    posted_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"quota request #{self.quota_request_id} in {self.channel_id}"
