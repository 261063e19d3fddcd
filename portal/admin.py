"""Admin back-office for jobs, the audit trail, quotas (with inlines on users and groups) and requests.

Jobs and audit events are read-only: services write them. Quota limits change through
portal.quotas.quota_set, quota requests are decided through portal.quota_requests.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group
from django.db.models import Count, Q
from django.utils.html import format_html, format_html_join

from .admin_helpers import (
    EMPTY,
    ReadOnlyAdminMixin,
    ServiceSaveMixin,
    badge,
    changelist_link,
    link,
    mib,
    per_object,
    progress_bar,
    target_link,
    when,
)
from .choices import JobStatus, Via
from .models import AuditEvent, Job, Quota, QuotaRequest
from .quotas import QUOTA_LIMIT_FIELDS, quota_set, quota_usage

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
        (None, {"fields": ("id", "kind", "target", "status_badge", "progress_col", "step", "actor", "via")}),
        ("Outcome", {"fields": ("error", "error_detail", "result_json", "log_text", "traceback_text")}),
        ("Timing", {"fields": ("created", "started", "finished", "duration", "attempts", "max_attempts", "worker",
                               "heartbeat")}),
        ("Input", {"classes": ("collapse",), "fields": ("params_json", "audit_link")}),
    )
    readonly_fields = ("id", "kind", "target", "status_badge", "progress_col", "step", "actor", "via", "error",
                       "error_detail", "result_json", "log_text", "traceback_text", "created", "started", "finished",
                       "duration", "attempts", "max_attempts", "worker", "heartbeat", "params_json", "audit_link")

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
            from django.utils import timezone

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


# --- quotas -------------------------------------------------------------------------------------

def _usage_rows(quota: Quota):
    if quota is None or quota.pk is None:
        return None
    if not hasattr(quota, "_usage_cache"):
        subject = {"group": quota.group} if quota.group_id else {"user": quota.user}
        quota._usage_cache = {u.resource: u for u in quota_usage(**subject)}
    return quota._usage_cache


def _usage_cell(quota: Quota, resource: str):
    usage = (_usage_rows(quota) or {}).get(resource)
    if usage is None:
        return EMPTY
    used = mib(usage.used) if usage.unit == "MiB" else f"{usage.used}"
    limit = mib(usage.limit) if usage.unit == "MiB" else f"{usage.limit}"
    unit = " GiB" if usage.unit == "GiB" else ""
    tone = "bad" if usage.used > usage.limit else ("warn" if usage.percent >= 80 else "ok")
    return format_html('<span class="pusage pusage-{}" title="{}% used">{} / {}{}</span>', tone, usage.percent,
                       used, limit, unit)


class QuotaForm(forms.ModelForm):
    class Meta:
        model = Quota
        fields = ["user", "group", *QUOTA_LIMIT_FIELDS]

    def clean(self):
        data = super().clean()
        if "user" in self.fields and bool(data.get("user")) == bool(data.get("group")):
            raise forms.ValidationError("Choose either a user or a group (a quota belongs to exactly one).")
        return data

    def validate_constraints(self, exclude=None):  # the form's own message says it better
        return None


class SubjectFilter(admin.SimpleListFilter):
    title = "subject"
    parameter_name = "subject"

    def lookups(self, request, model_admin):
        return [("user", "Users"), ("group", "Groups")]

    def queryset(self, request, queryset):
        if self.value() == "user":
            return queryset.filter(user__isnull=False)
        if self.value() == "group":
            return queryset.filter(group__isnull=False)
        return queryset


@admin.register(Quota)
class QuotaAdmin(ServiceSaveMixin, admin.ModelAdmin):
    form = QuotaForm
    list_display = ("subject", "vms_used", "vcpus_used", "memory_used", "disk_used", "vms_link", "updated")
    list_filter = (SubjectFilter, ("user", admin.RelatedOnlyFieldListFilter), ("group", admin.RelatedOnlyFieldListFilter))
    search_fields = ("user__username", "group__name")
    list_select_related = ("user", "group")

    def get_fieldsets(self, request, obj=None):
        limits = (None, {"fields": QUOTA_LIMIT_FIELDS,
                         "description": "Lowering a limit below current usage keeps existing VMs; new ones are "
                                        "refused until usage drops."})
        if obj is None:
            return ((None, {"fields": ("user", "group")}), limits)
        return ((None, {"fields": ("subject", "usage_summary", "vms_link")}), limits)

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("subject", "usage_summary", "vms_link")

    def has_delete_permission(self, request, obj=None):
        return False  # limits are edited; a subject without a row simply gets the defaults

    @admin.display(description="subject")
    def subject(self, obj):
        if obj.user_id:
            return format_html("user {}", link(obj.user, obj.user.get_username()))
        return format_html("group {}", link(obj.group, obj.group.name))

    @admin.display(description="VMs")
    def vms_used(self, obj):
        return _usage_cell(obj, "vms")

    @admin.display(description="vCPUs")
    def vcpus_used(self, obj):
        return _usage_cell(obj, "vcpus")

    @admin.display(description="memory")
    def memory_used(self, obj):
        return _usage_cell(obj, "memory_mib")

    @admin.display(description="disk")
    def disk_used(self, obj):
        return _usage_cell(obj, "disk_gib")

    @admin.display(description="usage (used / limit)")
    def usage_summary(self, obj):
        return format_html("VMs {} · vCPUs {} · memory {} · disk {}", _usage_cell(obj, "vms"),
                           _usage_cell(obj, "vcpus"), _usage_cell(obj, "memory_mib"), _usage_cell(obj, "disk_gib"))

    @admin.display(description="their VMs")
    def vms_link(self, obj):
        from vms.models import VM

        if obj.group_id:
            return changelist_link(VM, f"VMs of group {obj.group.name}", group__id__exact=obj.group_id)
        return changelist_link(VM, f"VMs of {obj.user.get_username()}", owner__id__exact=obj.user_id)

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, obj):
        return when(obj.updated_at)

    def save_model(self, request, obj, form, change):
        limits = {f: form.cleaned_data[f] for f in QUOTA_LIMIT_FIELDS}
        subject = {"group": obj.group} if obj.group_id else {"user": obj.user}
        quota = self.call_service(request, lambda: quota_set(actor=request.user, via=Via.ADMIN, **subject,
                                                             **limits))
        if quota is not None:
            obj.pk = quota.pk
            obj.refresh_from_db()


class QuotaInlineForm(forms.ModelForm):
    class Meta:
        model = Quota
        fields = list(QUOTA_LIMIT_FIELDS)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is None:  # no row yet: show the defaults that apply
            from django.conf import settings

            for field, value in settings.DEFAULT_QUOTA.items():
                self.initial.setdefault(field, value)
                if field in self.fields:
                    self.fields[field].initial = value


class QuotaInline(admin.StackedInline):
    """The subject's quota, edited through quota_set (see QuotaInlineMixin.save_formset)."""

    model = Quota
    form = QuotaInlineForm
    extra = 1
    max_num = 1
    can_delete = False
    fields = ("usage", *QUOTA_LIMIT_FIELDS)
    readonly_fields = ("usage",)

    def get_extra(self, request, obj=None, **kwargs):
        if obj is not None and Quota.objects.filter(**{self.fk_name: obj}).exists():
            return 0
        return 1

    @admin.display(description="usage (used / limit)")
    def usage(self, obj):
        if obj is None or obj.pk is None:
            return "No quota row yet: the defaults below apply."
        return format_html("VMs {} · vCPUs {} · memory {} · disk {} — {}", _usage_cell(obj, "vms"),
                           _usage_cell(obj, "vcpus"), _usage_cell(obj, "memory_mib"), _usage_cell(obj, "disk_gib"),
                           link(obj, "quota page"))


class UserQuotaInline(QuotaInline):
    fk_name = "user"
    verbose_name = verbose_name_plural = "personal quota"


class GroupQuotaInline(QuotaInline):
    fk_name = "group"
    verbose_name = verbose_name_plural = "team quota"


class QuotaInlineMixin:
    """Save the quota inline through quota_set instead of writing the row."""

    quota_subject = "user"

    def save_formset(self, request, form, formset, change):
        if formset.model is not Quota:
            return super().save_formset(request, form, formset, change)
        from .exceptions import PortalError

        # What Django's change message reads from a saved formset.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for qform in formset.forms:
            if not qform.has_changed() or not qform.is_valid():
                continue
            limits = {f: qform.cleaned_data[f] for f in QUOTA_LIMIT_FIELDS if f in qform.cleaned_data}
            created = qform.instance.pk is None
            try:
                quota = quota_set(actor=request.user, via=Via.ADMIN, **{self.quota_subject: formset.instance},
                                  **limits)
            except PortalError as exc:  # reported, never a 500
                self.message_user(request, f"Quota not saved: {exc.message}", messages.ERROR)
                continue
            if created:
                formset.new_objects.append(quota)
            else:
                formset.changed_objects.append((quota, qform.changed_data))

    def get_deleted_objects(self, objs, request):
        # Deleting a user or group removes its quota row with it; no separate permission is needed.
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        perms_needed = {p for p in perms_needed if p != Quota._meta.verbose_name}
        return deleted, model_count, perms_needed, protected


admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class UserAdmin(QuotaInlineMixin, DjangoUserAdmin):
    quota_subject = "user"
    inlines = [*DjangoUserAdmin.inlines, UserQuotaInline]
    list_display = ("username", "email", "first_name", "last_name", "is_staff", "is_active", "vms_link",
                    "last_login")

    def get_queryset(self, request):
        from vms.choices import VMStatus

        return super().get_queryset(request).annotate(
            live_vms=Count("vms", filter=~Q(vms__status=VMStatus.DELETED)))

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        return (*fields, "vms_link") if obj is not None else fields

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        return (*fieldsets, ("VMs", {"fields": ("vms_link",)}))

    @admin.display(description="VMs", ordering="live_vms")
    def vms_link(self, obj):
        from vms.models import VM

        count = getattr(obj, "live_vms", None)
        if count is None:
            count = VM.objects.filter(owner=obj).exclude(status="deleted").count()
        return changelist_link(VM, f"{count} VM{'s' if count != 1 else ''}", owner__id__exact=obj.pk)


@admin.register(Group)
class GroupAdmin(QuotaInlineMixin, DjangoGroupAdmin):
    quota_subject = "group"
    inlines = [*DjangoGroupAdmin.inlines, GroupQuotaInline]
    list_display = ("name", "members", "vms_link")

    def get_queryset(self, request):
        from vms.choices import VMStatus

        return super().get_queryset(request).annotate(
            n_members=Count("user", distinct=True),
            live_vms=Count("vms", filter=~Q(vms__status=VMStatus.DELETED), distinct=True))

    @admin.display(description="members", ordering="n_members")
    def members(self, obj):
        return changelist_link(User, obj.n_members, groups__id__exact=obj.pk)

    @admin.display(description="team VMs", ordering="live_vms")
    def vms_link(self, obj):
        from vms.models import VM

        return changelist_link(VM, obj.live_vms, group__id__exact=obj.pk)


# --- quota requests -----------------------------------------------------------------------------

@admin.register(QuotaRequest)
class QuotaRequestAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Requests are made by users (web, Slack) and decided here through portal.quota_requests."""

    list_display = ("id", "subject", "status_badge", "asked", "reason_short", "via", "created", "decided")
    list_filter = ("status", "via")
    search_fields = ("requester__username", "group__name", "reason", "decision_note")
    list_select_related = ("requester", "group", "decided_by")
    actions = ["approve", "deny"]
    fields = ("subject", "status_badge", "asked", "reason", "via", "created", "decided", "decision_note")
    readonly_fields = fields

    def has_change_permission(self, request, obj=None):
        # Needed for the approve/deny actions; the form itself has only read-only fields and no Save.
        return request.user.is_staff and request.user.has_perm("portal.change_quotarequest")

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        extra = {"show_save": False, "show_save_and_continue": False, "show_save_and_add_another": False,
                 "show_delete": False, **(extra_context or {})}
        return super().changeform_view(request, object_id, form_url, extra)

    def save_model(self, request, obj, form, change):
        return None  # decisions are taken with the Approve / Deny actions, through the service

    @admin.display(description="subject")
    def subject(self, obj):
        if obj.group_id:
            return format_html("group {} (asked by {})", link(obj.group, obj.group.name),
                               obj.requester.get_username())
        return format_html("user {}", link(obj.requester, obj.requester.get_username()))

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        tone = {"pending": "busy", "approved": "ok", "denied": "bad", "cancelled": "muted"}.get(obj.status)
        return badge(obj.status, obj.get_status_display(), tone=tone)

    @admin.display(description="asked for")
    def asked(self, obj):
        from .quota_requests import quota_request_changes

        changes = quota_request_changes(obj)
        return format_html_join(", ", "{}", ((str(c),) for c in changes)) if changes else EMPTY

    @admin.display(description="reason")
    def reason_short(self, obj):
        return obj.reason if len(obj.reason) <= 80 else obj.reason[:80] + "…"

    @admin.display(description="created", ordering="created_at")
    def created(self, obj):
        return when(obj.created_at)

    @admin.display(description="decided", ordering="decided_at")
    def decided(self, obj):
        if not obj.decided_at:
            return EMPTY
        by = obj.decided_by.get_username() if obj.decided_by_id else "system"
        return format_html("{} by {}", when(obj.decided_at), by)

    @admin.action(permissions=["change"], description="Approve (raise the quota)",
                  location=[admin.ActionLocation.CHANGE_LIST, admin.ActionLocation.CHANGE_FORM])
    def approve(self, request, queryset):
        from .quota_requests import quota_request_approve, quota_request_summary

        def call(req):
            req = quota_request_approve(actor=request.user, via=Via.ADMIN, request=req.pk)
            return messages.SUCCESS, f"Approved #{req.pk}: {quota_request_summary(req)}."

        per_object(self, request, queryset, call, verb="Approved")

    @admin.action(permissions=["change"], description="Deny",
                  location=[admin.ActionLocation.CHANGE_LIST, admin.ActionLocation.CHANGE_FORM])
    def deny(self, request, queryset):
        from .quota_requests import quota_request_deny

        def call(req):
            req = quota_request_deny(actor=request.user, via=Via.ADMIN, request=req.pk)
            return messages.SUCCESS, f"Denied #{req.pk} ({req.subject_name})."

        per_object(self, request, queryset, call, verb="Denied")
