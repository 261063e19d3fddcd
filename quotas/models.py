"""Quotas: limits per user or group (a team sharing a pool), and requests to raise them.

Usage is not stored: it is computed from what the other apps count (see quotas.usage)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.db.models import Q

from portal.choices import Via


class Quota(models.Model):
    """Limits for one user or one group (a team sharing a pool); usage is computed from VM rows."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                                related_name="quota")
    group = models.OneToOneField(Group, null=True, blank=True, on_delete=models.CASCADE, related_name="quota")
    max_vms = models.PositiveIntegerField("VMs", default=3)
    max_vcpus = models.PositiveIntegerField("vCPUs", default=4)
    max_memory_mib = models.PositiveIntegerField("memory (MiB)", default=2048)
    max_disk_gib = models.PositiveIntegerField("disk (GiB)", default=40)
    max_backup_gib = models.PositiveIntegerField("backup space (GiB)", default=40)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "portal_quota"  # the model moved from the portal core: same table, no data migration
        constraints = [
            models.CheckConstraint(
                condition=(Q(user__isnull=False, group__isnull=True) | Q(user__isnull=True, group__isnull=False)),
                name="quota_exactly_one_owner",
            )
        ]

    def __str__(self) -> str:
        return f"Quota of {self.subject_name}"

    @property
    def subject_name(self) -> str:
        if self.user is not None:
            return f"user {self.user.get_username()}"
        return f"group {self.group.name}" if self.group is not None else "nobody"


class QuotaRequest(models.Model):
    """A request for a larger quota (a user's, or a group's): decided once by an administrator.

    The `max_*` fields are the limits asked for (blank: unchanged); `previous` keeps the limits at
    the time of the request. Only quotas.services writes these rows.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        DENIED = "denied", "Denied"
        CANCELLED = "cancelled", "Cancelled"

    requester = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                  related_name="quota_requests")
    group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.CASCADE,
                              related_name="quota_requests", help_text="Blank: the requester's own quota.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    max_vms = models.PositiveIntegerField("VMs", null=True, blank=True)
    max_vcpus = models.PositiveIntegerField("vCPUs", null=True, blank=True)
    max_memory_mib = models.PositiveIntegerField("memory (MiB)", null=True, blank=True)
    max_disk_gib = models.PositiveIntegerField("disk (GiB)", null=True, blank=True)
    max_backup_gib = models.PositiveIntegerField("backup space (GiB)", null=True, blank=True)
    previous = models.JSONField(default=dict, blank=True, help_text="Limits when the request was made.")
    reason = models.TextField(blank=True)
    via = models.CharField(max_length=16, choices=Via.choices, default=Via.WEB)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_via = models.CharField(max_length=16, choices=Via.choices, blank=True)
    decision_note = models.TextField(blank=True)

    class Meta:
        db_table = "portal_quotarequest"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Quota request #{self.pk} of {self.subject_name} ({self.status})"

    @property
    def subject_name(self) -> str:
        if self.group is not None:
            return f"group {self.group.name}"
        return f"user {self.requester.get_username()}"

    @property
    def is_pending(self) -> bool:
        return self.status == self.Status.PENDING
