"""Admin back-office for quotas (with an inline for users and groups, see vms.admin) and quota requests.

Limits change through quotas.services.quota_set, requests are decided through the request
services: the admin writes no row itself.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.utils.html import format_html, format_html_join

from portal.admin_helpers import (
    EMPTY,
    ReadOnlyAdminMixin,
    ServiceSaveMixin,
    admin_error_text,
    badge,
    changelist_link,
    link,
    mib,
    per_object,
    when,
)
from portal.choices import Via
from portal.exceptions import PortalError

from .models import Quota, QuotaRequest
from .selectors import quota_request_changes, quota_request_summary, quota_usage
from .services import QUOTA_LIMIT_FIELDS, quota_request_approve, quota_request_deny, quota_set

User = get_user_model()


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
    list_display = ("subject", "vms_used", "vcpus_used", "memory_used", "disk_used", "backup_used", "vms_link",
                    "updated")
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

    @admin.display(description="backup space")  # issue #11
    def backup_used(self, obj):
        return _usage_cell(obj, "backup_gib")

    @admin.display(description="usage (used / limit)")
    def usage_summary(self, obj):
        return format_html("VMs {} · vCPUs {} · memory {} · disk {} · backup space {}", _usage_cell(obj, "vms"),
                           _usage_cell(obj, "vcpus"), _usage_cell(obj, "memory_mib"), _usage_cell(obj, "disk_gib"),
                           _usage_cell(obj, "backup_gib"))

    @admin.display(description="their VMs")
    def vms_link(self, obj):
        # The VM model is reached through the reverse relation: quotas sits below vms and imports none of it.
        if obj.group_id:
            return changelist_link(obj.group.vms.model, f"VMs of group {obj.group.name}", group__id__exact=obj.group_id)
        return changelist_link(obj.user.vms.model, f"VMs of {obj.user.get_username()}", owner__id__exact=obj.user_id)

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
        return format_html("VMs {} · vCPUs {} · memory {} · disk {} · backup space {} — {}", _usage_cell(obj, "vms"),
                           _usage_cell(obj, "vcpus"), _usage_cell(obj, "memory_mib"), _usage_cell(obj, "disk_gib"),
                           _usage_cell(obj, "backup_gib"), link(obj, "quota page"))


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
                self.message_user(request, f"Quota not saved: {admin_error_text(exc)}", messages.ERROR)
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


# --- quota requests -----------------------------------------------------------------------------

@admin.register(QuotaRequest)
class QuotaRequestAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Requests are made by users (web, Slack) and decided here through quotas.services."""

    list_display = ("id", "subject", "status_badge", "asked", "reason_short", "via", "created", "decided")
    list_filter = ("status", "via")
    search_fields = ("requester__username", "group__name", "reason", "decision_note")
    list_select_related = ("requester", "group", "decided_by")
    actions = ["approve", "deny"]
    fields = ("subject", "status_badge", "asked", "reason", "via", "created", "decided", "decision_note")
    readonly_fields = fields

    def has_change_permission(self, request, obj=None):
        # Needed for the approve/deny actions; the form itself has only read-only fields and no Save.
        return request.user.is_staff and request.user.has_perm("quotas.change_quotarequest")

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
        def call(req):
            req = quota_request_approve(actor=request.user, via=Via.ADMIN, request=req.pk)
            return messages.SUCCESS, f"Approved #{req.pk}: {quota_request_summary(req)}."

        per_object(self, request, queryset, call, verb="Approved")

    @admin.action(permissions=["change"], description="Deny",
                  location=[admin.ActionLocation.CHANGE_LIST, admin.ActionLocation.CHANGE_FORM])
    def deny(self, request, queryset):
        def call(req):
            req = quota_request_deny(actor=request.user, via=Via.ADMIN, request=req.pk)
            return messages.SUCCESS, f"Denied #{req.pk} ({req.subject_name})."

        per_object(self, request, queryset, call, verb="Denied")
