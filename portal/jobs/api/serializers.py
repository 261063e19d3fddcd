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
                  "created_at", "started_at", "finished_at", "updated_at", "traceback", "parent", "children_count",
                  "url"]
        read_only_fields = fields

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
