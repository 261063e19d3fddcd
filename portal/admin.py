"""Admin back-office for jobs, plugin tokens and the audit trail: jobs and audit are read-only (services write
them); plugin tokens are issued and revoked through portal.plugins."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
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
from .choices import JobStatus, Via
from .exceptions import PortalError, user_message
from .jobs.services import job_can_cancel, job_cancel
from .models import AuditEvent, Job, PluginToken
from .plugins import plugin_token_check, plugin_token_create, plugin_token_revoke

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
    list_display = ("kind", "target", "status_badge", "progress_col", "started_by_col", "via", "created", "duration")
    list_filter = ("status", "kind", "via", "target_type", "external")
    search_fields = ("kind", "target_name", "target_id", "actor__username", "plugin__name", "error")
    list_select_related = ("actor", "plugin")
    date_hierarchy = "created_at"
    actions = ["cancel_jobs"]
    fieldsets = (
        (None, {"fields": ("id", "kind", "target", "status_badge", "progress_col", "step", "actor", "via",
                           "batch")}),
        ("External plugin", {"fields": ("external", "plugin", "cancellable", "cancel_requested_at")}),
        ("Outcome", {"fields": ("error", "error_detail", "result_json", "log_text", "traceback_text")}),
        ("Timing", {"fields": ("created", "started", "finished", "duration", "attempts", "max_attempts", "worker",
                               "heartbeat")}),
        ("Input", {"classes": ("collapse",), "fields": ("params_json", "audit_link")}),
    )
    readonly_fields = ("id", "kind", "target", "status_badge", "progress_col", "step", "actor", "via",
                       "external", "plugin", "cancellable", "cancel_requested_at", "error",
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

    @admin.display(description="started by")
    def started_by_col(self, obj):
        return obj.started_by

    @admin.action(description="Cancel selected jobs (external: ask the plugin; pending: at once)")
    def cancel_jobs(self, request, queryset):
        """Through portal.jobs.services.job_cancel, one job at a time, each result reported."""
        for job in queryset:
            if not job_can_cancel(job):
                self.message_user(request, f"{job}: cannot be cancelled.", messages.WARNING)
                continue
            try:
                job = job_cancel(actor=request.user, via=Via.ADMIN, job_id=job.pk)
            except PortalError as exc:
                self.message_user(request, f"{job}: {user_message(exc, user=request.user)}", messages.ERROR)
            else:
                done = "cancelled" if job.status == JobStatus.CANCELLED else "cancel requested"
                self.message_user(request, f"{job}: {done}.", messages.SUCCESS)

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

# --- plugin tokens -------------------------------------------------------------------------------

class PluginTokenForm(forms.ModelForm):
    class Meta:
        model = PluginToken
        fields = ("name", "all_targets", "groups")

    def clean(self):
        data = super().clean()
        try:
            plugin_token_check(name=data.get("name") or "", all_targets=bool(data.get("all_targets")),
                               groups=list(data.get("groups") or []))
        except PortalError as exc:
            raise forms.ValidationError(exc.message) from None
        return data


@admin.register(PluginToken)
class PluginTokenAdmin(admin.ModelAdmin):
    """Issue a token (shown once, in the message after saving), see its scope and last use, revoke it."""

    form = PluginTokenForm
    list_display = ("name", "prefix_col", "scope", "created_by", "created", "last_used", "state")
    list_filter = ("all_targets",)
    search_fields = ("name", "prefix")
    list_select_related = ("created_by",)
    actions = ["revoke_tokens"]
    filter_horizontal = ("groups",)

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("groups")

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("name", "all_targets", "groups")
        return ("name", "prefix_col", "scope", "created_by", "created", "last_used", "state")

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("name", "prefix_col", "scope", "created_by", "created", "last_used", "state")

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead: the jobs keep naming their plugin

    def save_model(self, request, obj, form, change):
        groups: list[Group] = list(form.cleaned_data.get("groups") or [])
        plugin, token = plugin_token_create(actor=request.user, via=Via.ADMIN, name=obj.name,
                                            all_targets=obj.all_targets, groups=groups)
        obj.pk = plugin.pk
        obj.__dict__.update({k: v for k, v in plugin.__dict__.items() if not k.startswith("_")})
        self.message_user(request, f"The token of plugin {plugin.name} is {token} — copy it now: it is not shown "
                                   "again (only its hash is kept).", messages.WARNING)

    def save_related(self, request, form, formsets, change):
        pass  # the groups were set by plugin_token_create

    @admin.display(description="token")
    def prefix_col(self, obj):
        return f"{obj.prefix}…"

    @admin.display(description="scope")
    def scope(self, obj):
        return "all VMs and hosts" if obj.all_targets else ", ".join(f"group {g.name}" for g in obj.groups.all())

    @admin.display(description="created", ordering="created_at")
    def created(self, obj):
        return when(obj.created_at)

    @admin.display(description="last used", ordering="last_used_at")
    def last_used(self, obj):
        return when(obj.last_used_at) if obj.last_used_at else "never"

    @admin.display(description="state")
    def state(self, obj):
        return f"revoked {obj.revoked_at:%Y-%m-%d %H:%M}" if obj.revoked_at else "active"

    @admin.action(description="Revoke selected tokens")
    def revoke_tokens(self, request, queryset):
        for plugin in queryset:
            try:
                plugin_token_revoke(actor=request.user, via=Via.ADMIN, plugin=plugin)
            except PortalError as exc:
                self.message_user(request, f"{plugin.name}: {user_message(exc, user=request.user)}", messages.ERROR)
            else:
                self.message_user(request, f"Revoked the token of plugin {plugin.name}.", messages.SUCCESS)


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
