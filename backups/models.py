"""VM backups (full and incremental, through libvirt's backup API with checkpoints) and schedules.

A backup outlives its VM (restoring is how a deleted VM comes back): it keeps the VM's name, owner and
sizes. Rows change only in backups.services.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from portal.choices import Via


class Backup(models.Model):
    """One backup of a VM's disks: a full one, or an incremental one holding only the clusters changed
    since its parent (the chain: full ← incremental ← incremental …). Each disk's backup is a qcow2
    volume in a backup storage domain (`pool`), listed in `disks`."""

    class Kind(models.TextChoices):
        FULL = "full", "Full"
        INCREMENTAL = "incremental", "Incremental"

    class Mode(models.TextChoices):
        PUSH = "push", "Push (libvirt writes the backup files)"
        PULL = "pull", "Pull (an external tool reads the disks over NBD)"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"
        DELETING = "deleting", "Deleting"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    vm = models.ForeignKey("vms.VM", null=True, blank=True, on_delete=models.SET_NULL, related_name="backups")
    vm_name = models.CharField(max_length=63, help_text="The VM's name when it was backed up.")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="backups",
                              help_text="The VM's owner: whose backup quota it counts against (or its group's).")
    group = models.ForeignKey("auth.Group", null=True, blank=True, on_delete=models.PROTECT, related_name="backups")
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.FULL)
    mode = models.CharField(max_length=4, choices=Mode.choices, default=Mode.PUSH)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children",
                               help_text="Incremental: the backup it holds the changes since.")
    checkpoint = models.CharField(max_length=100, blank=True,
                                  help_text="The libvirt checkpoint made with it (the next incremental starts there).")
    pool = models.ForeignKey("storage.StoragePool", null=True, blank=True, on_delete=models.PROTECT,
                             related_name="backups", help_text="The backup storage domain holding its files.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    progress = models.PositiveSmallIntegerField(default=0, help_text="Percent done while running.")
    # [{"target": "vda", "volume": "<volume name in pool>", "path": "...", "capacity_bytes": n, "size_bytes": n,
    #   "format": "qcow2", "readonly": false, "bus": "virtio", "boot": true}]
    disks = models.JSONField(default=list, blank=True)
    size_bytes = models.BigIntegerField(default=0, help_text="Space its files take in the backup domain.")
    # What a restore needs to make the VM again: vcpus, memory_mib, disk_gib, image id, user_data, ...
    vm_config = models.JSONField(default=dict, blank=True)
    nbd_uri = models.CharField("NBD URI", max_length=300, blank=True,
                               help_text="Pull mode: where an external tool reads the disks while the backup runs.")
    note = models.CharField(max_length=200, blank=True)
    last_error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_via = models.CharField(max_length=16, choices=Via.choices, default=Via.WEB)
    schedule = models.ForeignKey("BackupSchedule", null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="backups", help_text="The schedule that made it (blank: by hand).")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["vm", "status", "created_at"], name="backup_vm_status"),
                   # the lists' order, newest first: read in index order, no sort of every row (issue #13)
                   models.Index(fields=["-created_at", "-id"], name="backup_newest_first")]

    def __str__(self) -> str:
        return f"{self.vm_name} {self.kind} backup of {self.created_at:%Y-%m-%d %H:%M}"


class BackupSchedule(models.Model):
    """Back a VM up every `interval_hours`: a full backup, then `incrementals` incremental ones on it,
    then a full one again; keep the newest `keep_chains` chains (older ones are deleted)."""

    vm = models.OneToOneField("vms.VM", on_delete=models.CASCADE, related_name="backup_schedule")
    enabled = models.BooleanField(default=True)
    interval_hours = models.PositiveIntegerField(default=24)
    incrementals = models.PositiveIntegerField(default=6, help_text="Incremental backups between two full ones.")
    keep_chains = models.PositiveIntegerField(default=2, help_text="Full backups (with their incrementals) kept.")
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["vm"]

    def __str__(self) -> str:
        return f"Backups of {self.vm} every {self.interval_hours} h"
