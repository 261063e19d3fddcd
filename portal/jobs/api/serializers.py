"""Shapes of the jobs API."""

from __future__ import annotations

from django.urls import NoReverseMatch
from rest_framework import serializers

from portal.api import row_url
from portal.api_rows import FastRowsMixin
from portal.choices import JobStatus
from portal.models import Job


class JobListQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=JobStatus.choices, required=False)
    kind = serializers.CharField(required=False, help_text="Job kind, e.g. vm.create.")
    parent = serializers.UUIDField(  # type: ignore[assignment]  # DRF pops declared fields off the class
        required=False, help_text="Only the children of this batch's parent job.")



class JobSummarySerializer(FastRowsMixin, serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = ["id", "kind", "status", "progress", "step", "url"]
        read_only_fields = fields

    def get_url(self, job: Job) -> str:
        return row_url(self.context, "api-job-detail", pk=str(job.pk))


class JobSerializer(JobSummarySerializer):
    actor: serializers.SlugRelatedField = serializers.SlugRelatedField(slug_field="username", read_only=True)
    plugin = serializers.SerializerMethodField(help_text="The plugin that runs an external job; null otherwise.")
    cancel_requested = serializers.SerializerMethodField()
    target_url = serializers.SerializerMethodField()
    traceback = serializers.SerializerMethodField(help_text="Only for staff; empty otherwise.")
    error_detail = serializers.SerializerMethodField(
        help_text="The hypervisor's own words behind `error`. Only for staff; empty otherwise.")
    parent = serializers.UUIDField(source="parent_id", read_only=True, allow_null=True,  # type: ignore[assignment]
                                   help_text="The batch's parent job (e.g. vm.bulk_create) this job belongs to.")
    children_count = serializers.IntegerField(
        read_only=True, default=0,
        help_text="How many jobs this (parent) job has; list them with /api/jobs/?parent=<id>.")

    class Meta:
        model = Job
        fields = ["id", "kind", "status", "progress", "step", "actor", "via", "target_type", "target_id",
                  "target_name", "target_url", "params", "result", "error", "error_detail", "log", "attempts", "max_attempts",
                  "created_at", "started_at", "finished_at", "updated_at", "traceback", "parent", "children_count", "url",
                  "external", "plugin", "cancellable", "cancel_requested"]
        read_only_fields = fields

    def get_plugin(self, job: Job) -> str | None:
        return job.plugin.name if job.plugin_id and job.plugin is not None else None

    def get_cancel_requested(self, job: Job) -> bool:
        return job.cancel_requested_at is not None

    def get_target_url(self, job: Job) -> str | None:
        """The API URL of the job's target: the `api-<target type>-detail` route of the app that owns it."""
        if not job.target_type or not job.target_id:
            return None
        try:
            return row_url(self.context, f"api-{job.target_type}-detail", pk=job.target_id)
        except NoReverseMatch:
            return None

    def get_traceback(self, job: Job) -> str:
        request = self.context.get("request")
        return job.traceback if request is not None and request.user.is_staff else ""

    def get_error_detail(self, job: Job) -> str:
        """The admin-only detail of a failure (libvirt's text, host URIs): staff only."""
        request = self.context.get("request")
        return job.error_detail if request is not None and request.user.is_staff else ""

    # The scheduler's explanation (every candidate host, its free memory, scores) is the administrators'
    # (issue #12 keeps it on the job): a VM's owner reads the job without it.
    STAFF_ONLY_KEYS = ("placement", "explanation")

    def to_representation(self, job: Job) -> dict:
        data = super().to_representation(job)
        request = self.context.get("request")
        if request is None or not request.user.is_staff:
            for name in ("params", "result"):
                if isinstance(data.get(name), dict):
                    data[name] = {k: v for k, v in data[name].items() if k not in self.STAFF_ONLY_KEYS}
        return data


# --- the plugin door (external jobs) ------------------------------------------------------------------

class ExternalJobCreateSerializer(serializers.Serializer):
    kind = serializers.CharField(help_text="external.<name>, e.g. external.backup-agent.")
    target_type = serializers.CharField(help_text="vm or host.")
    target = serializers.CharField(help_text="The VM's id, UUID or name; the host's id or name.")
    description = serializers.CharField(required=False, allow_blank=True, help_text="At most 500 characters.")
    step = serializers.CharField(required=False, allow_blank=True, help_text="The first step (default Started).")
    cancellable = serializers.BooleanField(required=False, default=False,
                                           help_text="The VM's owner may ask the plugin to cancel the job.")


class ExternalJobReportSerializer(serializers.Serializer):
    progress = serializers.JSONField(required=False, help_text="0-100.")
    step = serializers.CharField(required=False, allow_blank=True, help_text="At most 200 characters.")
    log = serializers.JSONField(required=False, help_text="A line or a list of at most 100 lines (500 characters "
                                                          "each; control characters are removed).")


class ExternalJobFinishSerializer(serializers.Serializer):
    status = serializers.CharField(required=False, default="succeeded", help_text="succeeded, failed or cancelled.")
    error = serializers.CharField(required=False, allow_blank=True, help_text="Required when failed.")
    result = serializers.JSONField(required=False, help_text="A JSON object (at most 16 KiB).")
    log = serializers.JSONField(required=False)


class ExternalJobSerializer(serializers.ModelSerializer):
    """A plugin's view of its own job."""

    description = serializers.SerializerMethodField()
    cancel_requested = serializers.SerializerMethodField(
        help_text="The job's owner asked to cancel it: clean up and finish it as cancelled.")
    url = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = ["id", "kind", "status", "progress", "step", "description", "target_type", "target_id",
                  "target_name", "cancellable", "cancel_requested", "error", "result", "created_at", "finished_at",
                  "updated_at", "url"]
        read_only_fields = fields

    def get_description(self, job: Job) -> str:
        return str(job.params.get("description", ""))

    def get_cancel_requested(self, job: Job) -> bool:
        return job.cancel_requested_at is not None

    def get_url(self, job: Job) -> str:
        return row_url(self.context, "api-external-job-detail", pk=str(job.pk))
