"""Admin back-office for jobs and the audit trail: read-only, since services write them."""

from __future__ import annotations

import json

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from .admin_helpers import (
    EMPTY,
    ReadOnlyAdminMixin,
    badge,
    changelist_link,
    link,
    progress_bar,
    target_link,
    when,
)
from .choices import JobStatus
from .models import AuditEvent, Job

admin.site.site_header = "VM Portal administration"
admin.site.site_title = "VM Portal admin"
admin.site.index_title = "Back-office"

User = get_user_model()


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return EMPTY
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _pre(text: str):
    return format_html('<pre class="plog">{}</pre>', text) if text else EMPTY


def _json(value) -> object:
    if not value:
        return EMPTY
    return _pre(json.dumps(value, indent=2, sort_keys=True, default=str))


# --- jobs ---------------------------------------------------------------------------------------

@admin.register(Job)
class JobAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("kind", "target", "status_badge", "progress_col", "actor", "via", "created", "duration")
    list_filter = ("status", "kind", "via", "target_type")
    search_fields = ("kind", "target_name", "target_id", "actor__username", "error")
    list_select_related = ("actor",)
    date_hierarchy = "created_at"
    actions = None
    fieldsets = (
        (None, {"fields": ("id", "kind", "target", "status_badge", "progress_col", "step", "actor", "via",
                           "batch")}),
        ("Outcome", {"fields": ("error", "error_detail", "result_json", "log_text", "traceback_text")}),
        ("Timing", {"fields": ("created", "started", "finished", "duration", "attempts", "max_attempts", "worker",
                               "heartbeat")}),
        ("Input", {"classes": ("collapse",), "fields": ("params_json", "audit_link")}),
    )
    readonly_fields = ("id", "kind", "target", "status_badge", "progress_col", "step", "actor", "via", "error",
                       "error_detail", "result_json", "log_text", "traceback_text", "created", "started", "finished",
                       "duration", "attempts", "max_attempts", "worker", "heartbeat", "params_json", "audit_link",
                       "batch")

    @admin.display(description="batch")
    def batch(self, obj):
        """A batch's parent lists its children, a child links to its parent (issue #14)."""
        if obj.parent_id:
            return format_html('part of <a href="{}">{}</a>', reverse("admin:portal_job_change", args=[obj.parent_id]),
                               obj.parent_id)
        children = list(obj.children.order_by("created_at").values_list("pk", "target_name", "status")[:200])
        if not children:
            return "—"
        return format_html_join(", ", '<a href="{}">{}</a> ({})', (
            (reverse("admin:portal_job_change", args=[pk]), name or pk, status) for pk, name, status in children))

    @admin.display(description="target", ordering="target_name")
    def target(self, obj):
        return target_link(obj.target_type, obj.target_id, obj.target_name)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.status, obj.get_status_display(), title=obj.error)

    @admin.display(description="progress", ordering="progress")
    def progress_col(self, obj):
        return progress_bar(obj.progress, obj.step)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj):
        return when(obj.created_at)

    @admin.display(description="started", ordering="started_at")
    def started(self, obj):
        return when(obj.started_at)

    @admin.display(description="finished", ordering="finished_at")
    def finished(self, obj):
        return when(obj.finished_at)

    @admin.display(description="last heartbeat")
    def heartbeat(self, obj):
        return when(obj.heartbeat_at)

    @admin.display(description="duration")
    def duration(self, obj):
        if obj.status in JobStatus.ACTIVE and obj.started_at:
            return f"running for {_duration((timezone.now() - obj.started_at).total_seconds())}"
        return _duration(obj.duration_seconds)

    @admin.display(description="log")
    def log_text(self, obj):
        return _pre(obj.log)

    @admin.display(description="traceback")
    def traceback_text(self, obj):
        return _pre(obj.traceback)

    @admin.display(description="result")
    def result_json(self, obj):
        return _json(obj.result)

    @admin.display(description="parameters")
    def params_json(self, obj):
        return _json(obj.params)

    @admin.display(description="audit events")
    def audit_link(self, obj):
        return changelist_link(AuditEvent, f"{obj.audit_events.count()} audit event(s)", job__id__exact=obj.pk)


# --- audit trail --------------------------------------------------------------------------------

@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("at_col", "actor_col", "via", "action", "target", "outcome_badge", "short_message")
    list_filter = ("via", "outcome", "action", "target_type")
    search_fields = ("actor_name", "action", "target_name", "target_id", "message")
    list_select_related = ("actor",)
    date_hierarchy = "at"
    actions = None
    fields = ("at_col", "actor_col", "via", "action", "target", "outcome_badge", "message", "job_link", "data_json")
    readonly_fields = fields

    @admin.display(description="at", ordering="at")
    def at_col(self, obj):
        return when(obj.at)

    @admin.display(description="actor", ordering="actor_name")
    def actor_col(self, obj):
        return link(obj.actor, obj.actor_name) if obj.actor_id else (obj.actor_name or "system")

    @admin.display(description="target", ordering="target_name")
    def target(self, obj):
        return target_link(obj.target_type, obj.target_id, obj.target_name)

    @admin.display(description="outcome", ordering="outcome")
    def outcome_badge(self, obj):
        return badge(obj.outcome, obj.get_outcome_display())

    @admin.display(description="message")
    def short_message(self, obj):
        text = obj.message
        return text if len(text) <= 120 else format_html('<span title="{}">{}…</span>', text, text[:120])

    @admin.display(description="job")
    def job_link(self, obj):
        return link(obj.job, obj.job.kind) if obj.job_id else EMPTY

    @admin.display(description="data")
    def data_json(self, obj):
        return _json(obj.data)
