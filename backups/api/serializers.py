"""Shapes of the backups API: input serializers parse types only (backups.services validates kinds,
modes, names and quota, with the same words as every other door); output serializers render rows,
never a host path."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from backups.models import Backup, BackupSchedule
from portal.api import row_url
from portal.jobs.api.serializers import JobSummarySerializer
from vms.api.serializers import VMSerializer
from vms.choices import VMStatus

# What a backup's `disks` entry shows: never its path on a host, nor the volume's name in the pool.
DISK_KEYS = ("target", "capacity_bytes", "size_bytes", "format", "readonly", "bus", "boot")


# --- input ---------------------------------------------------------------------------------------

class BackupCreateSerializer(serializers.Serializer):
    kind = serializers.CharField(required=False, default="auto",
                                 help_text='"auto" (default: incremental when possible, else full), "full" or '
                                           '"incremental".')
    mode = serializers.CharField(required=False, default="push",
                                 help_text='"push" (default: the portal writes the backup files) or "pull" (the '
                                           "disks are exported over NBD at `nbd_uri` until POST finish/).")
    note = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False,
                                 help_text="Free text kept with the backup (at most 200 characters).")


class BackupRestoreSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, allow_blank=True, allow_null=True, trim_whitespace=False,
                                 help_text="The new VM's name (restore to a new VM; charged to your quota).")
    in_place = serializers.BooleanField(required=False, default=False,
                                        help_text="Restore onto the backed-up VM's own disks (it must be stopped); "
                                                  "no `name` then.")

    def validate(self, attrs):
        if attrs.get("in_place") and attrs.get("name"):
            raise serializers.ValidationError({"name": "Give either a new VM name or in_place, not both."})
        return attrs


class BackupListQuerySerializer(serializers.Serializer):
    vm = serializers.CharField(required=False, help_text="Only backups of this VM (numeric id).")
    status = serializers.ChoiceField(choices=Backup.Status.choices, required=False)
    kind = serializers.ChoiceField(choices=Backup.Kind.choices, required=False)


class BackupScheduleInputSerializer(serializers.Serializer):
    """Every field is optional: one left out keeps the schedule's current value (a new schedule: enabled,
    every 24 h, 6 incrementals, 2 chains)."""

    enabled = serializers.BooleanField(required=False)
    interval_hours = serializers.JSONField(required=False,
                                           help_text="Hours between two backups (a whole number; default 24).")
    incrementals = serializers.JSONField(required=False,
                                         help_text="Incremental backups between two full ones (default 6).")
    keep_chains = serializers.JSONField(required=False, help_text="Full backups (with their incrementals) kept; "
                                                                  "older ones are deleted (default 2).")


# --- output --------------------------------------------------------------------------------------

@extend_schema_field({"type": "array", "items": {"type": "object", "properties": {
    "target": {"type": "string"}, "capacity_bytes": {"type": "integer"}, "size_bytes": {"type": "integer"},
    "format": {"type": "string"}, "readonly": {"type": "boolean"}, "bus": {"type": "string"},
    "boot": {"type": "boolean"}, "nbd_uri": {"type": "string", "description": "Pull mode, while running: "
                                              "where to read this disk over NBD."}}}})
class BackupDisksField(serializers.Field):
    """The backed-up disks, without where their files are."""

    def __init__(self, **kwargs):
        super().__init__(source="*", **kwargs)

    def to_representation(self, value: Backup):
        # A pull backup's per-disk NBD URI shows while it is being read (the export ends with it).
        keys = DISK_KEYS + (("nbd_uri",) if value.mode == Backup.Mode.PULL and value.status == Backup.Status.RUNNING
                            and value.nbd_uri else ())
        return [{k: d[k] for k in keys if k in d} for d in (value.disks or []) if isinstance(d, dict)]


class BackupSerializer(serializers.ModelSerializer):
    vm = serializers.SerializerMethodField(help_text="The VM's id (null once the VM is deleted).")
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    group = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    parent = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True,
                                                help_text="Incremental: the backup it holds the changes since.")
    status_label = serializers.CharField(source="get_status_display", read_only=True)
    disks = BackupDisksField(read_only=True)
    nbd_uri = serializers.SerializerMethodField(
        help_text="Pull mode, while the backup runs: where to read the disks over NBD (export names are the disk "
                  "targets, e.g. vda). Empty otherwise.")
    url = serializers.SerializerMethodField()
    vm_url = serializers.SerializerMethodField()
    finish_url = serializers.SerializerMethodField()
    restore_url = serializers.SerializerMethodField()

    class Meta:
        model = Backup
        fields = ["id", "uuid", "vm", "vm_name", "owner", "group", "kind", "mode", "status", "status_label",
                  "progress", "size_bytes", "parent", "disks", "nbd_uri", "note", "last_error", "created_via",
                  "created_at", "started_at", "finished_at", "url", "vm_url", "finish_url", "restore_url"]
        read_only_fields = fields

    def _reverse(self, name: str, **kwargs) -> str:
        return row_url(self.context, name, **kwargs)

    @staticmethod
    def _vm_id(backup: Backup) -> int | None:
        # VMs are soft-deleted (status deleted): their backups stay but point nowhere.
        if backup.vm_id is None or backup.vm is None or backup.vm.status == VMStatus.DELETED:
            return None
        return backup.vm_id

    @extend_schema_field({"type": "integer", "nullable": True})
    def get_vm(self, backup: Backup) -> int | None:
        return self._vm_id(backup)

    def get_nbd_uri(self, backup: Backup) -> str:
        running = backup.mode == Backup.Mode.PULL and backup.status == Backup.Status.RUNNING
        return backup.nbd_uri if running else ""

    def get_url(self, backup: Backup) -> str:
        return self._reverse("api-backup-detail", pk=backup.pk)

    def get_vm_url(self, backup: Backup) -> str | None:
        vm_id = self._vm_id(backup)
        return self._reverse("api-vm-detail", pk=vm_id) if vm_id else None

    def get_finish_url(self, backup: Backup) -> str:
        return self._reverse("api-backup-finish", pk=backup.pk)

    def get_restore_url(self, backup: Backup) -> str | None:
        if backup.mode == Backup.Mode.PULL:  # nothing stored here to restore
            return None
        return self._reverse("api-backup-restore", pk=backup.pk)


class BackupOperationSerializer(serializers.Serializer):
    """What a backup start, finish or delete answers: a message, the backup, its job (null: nothing queued)."""

    message = serializers.CharField()
    backup = BackupSerializer()
    job = JobSummarySerializer(allow_null=True)


class RestoreOperationSerializer(serializers.Serializer):
    """What a restore answers: a message, the VM being restored (new, or the backup's own), its job."""

    message = serializers.CharField()
    vm = VMSerializer()
    job = JobSummarySerializer()


class BackupScheduleSerializer(serializers.ModelSerializer):
    vm = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = BackupSchedule
        fields = ["vm", "enabled", "interval_hours", "incrementals", "keep_chains", "next_run_at", "last_run_at",
                  "last_error", "updated_at"]
        read_only_fields = fields
