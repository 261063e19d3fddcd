"""Small building blocks shared by the admin modules: badges, times, links, service calls with messages.

The admin is an adapter like the others: every change goes through a service, and domain errors
(portal.exceptions.PortalError) are turned into admin messages here, once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.apps import apps
from django.contrib import messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.db import transaction
from django.http import HttpResponseRedirect
from django.urls import NoReverseMatch, reverse
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.timezone import localtime

from . import units
from .choices import JobStatus
from .exceptions import InvalidState, PortalError, ValidationFailed, admin_message

EMPTY = "—"

# One tone per state word, the same across hosts, VMs, jobs and audit outcomes.
_TONES = {
    "running": "ok", "up": "ok", "succeeded": "ok",
    "stopped": "muted", "unknown": "muted", "cancelled": "muted", "deleted": "muted", "requested": "info",
    "creating": "busy", "starting": "busy", "stopping": "busy", "rebooting": "busy", "deleting": "busy",
    "migrating": "busy", "preparing": "busy", "non_responsive": "bad", "standby": "muted",
    "pending": "busy", "maintenance": "warn", "paused": "warn", "denied": "warn",
    "error": "bad", "down": "bad", "failed": "bad", "errored": "bad",
}


def badge(value: str, label: str | None = None, *, tone: str | None = None, title: str = ""):
    """A coloured badge that always carries its text label (never colour alone)."""
    tone = tone or _TONES.get(str(value), "muted")
    return format_html('<span class="pbadge pbadge-{}" title="{}">{}</span>', tone, title, label or value or EMPTY)


def when(value):
    """Relative time ("3 minutes ago") with the exact time on hover."""
    if not value:
        return EMPTY
    exact = date_format(localtime(value), "DATETIME_FORMAT")
    return format_html('<time datetime="{}" title="{}">{}</time>', value.isoformat(), exact, naturaltime(value))


def mib(value: int | None) -> str:
    """Memory for an admin cell: portal.units.mib, or the empty mark when there is no value."""
    return units.mib(value) if value is not None else EMPTY


def human_bytes(value: int | None) -> str:
    """Bytes for an admin cell: portal.units.filesize, or the empty mark for nothing."""
    return units.filesize(value) if value else EMPTY


def admin_url(obj_or_model, view: str = "change", **query) -> str | None:
    """The admin URL of an object (change page) or a model (changelist with filters)."""
    opts = obj_or_model._meta
    try:
        if view == "changelist":
            url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
            return f"{url}?{urlencode(query)}" if query else url
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=[obj_or_model.pk])
    except NoReverseMatch:
        return None


def link(obj, text: Any = None):
    """A link to an object's admin page (plain text when the model has no admin)."""
    if obj is None:
        return EMPTY
    url = admin_url(obj)
    text = str(obj) if text is None else text
    return format_html('<a href="{}">{}</a>', url, text) if url else text


def changelist_link(model, text: Any, **query):
    url = admin_url(model, "changelist", **query)
    return format_html('<a href="{}">{}</a>', url, text) if url else text


def target_link(target_type: str, target_id: str, target_name: str):
    """Link a job's or audit event's target to its admin page, by type."""
    label = target_name or f"{target_type} {target_id}" if target_type else EMPTY
    # Targets are named by model (portal.audit writes the model name): found in whichever app owns it.
    model = next((m for m in apps.get_models() if m._meta.model_name == target_type), None)
    if model is None or not str(target_id).isdigit():
        return label
    try:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[target_id])
    except NoReverseMatch:
        return label
    return format_html('<a href="{}">{}</a>', url, label)


def progress_bar(percent: int, label: str = ""):
    percent = max(0, min(100, int(percent or 0)))
    return format_html(
        '<span class="pprogress" role="progressbar" aria-valuenow="{}" aria-valuemin="0" aria-valuemax="100" '
        'title="{}"><span style="width:{}%"></span></span> {}%', percent, label, percent, percent)


def admin_error_text(exc: PortalError) -> str:
    """One line for a domain error; field errors joined with their field names; the hypervisor's
    own words after the plain ones (administrators read this)."""
    if isinstance(exc, ValidationFailed) and len(exc.errors) > 1:
        return "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.errors.items())
    return admin_message(exc)


def job_report(job, fallback: str) -> tuple[int, str]:
    """Level and text for an action that queued `job`: the outcome if it already finished."""
    if job is None:
        return messages.INFO, fallback
    job.refresh_from_db(fields=["status", "error", "step"])
    url = admin_url(job)
    job_ref = format_html('<a href="{}">job</a>', url) if url else "job"
    if job.status == JobStatus.SUCCEEDED:
        return messages.SUCCESS, format_html("{} Done ({}).", fallback, job_ref)
    if job.status in (JobStatus.FAILED, JobStatus.ERRORED):
        return messages.ERROR, format_html("{} Failed: {} ({}).", fallback, job.error or job.get_status_display(),
                                           job_ref)
    return messages.SUCCESS, format_html("{} Queued ({}).", fallback, job_ref)


def per_object(modeladmin, request, objects: Iterable, call: Callable[[Any], tuple[int, str] | None],
               *, verb: str) -> dict[str, int]:
    """Run `call` for each object, one message per object; domain errors become warnings/errors.

    `call` returns (level, message) or None for a plain success. Services own their transactions,
    so one failure never undoes the others.
    """
    counts = {"ok": 0, "refused": 0, "failed": 0}
    for obj in objects:
        try:
            outcome = call(obj)
        except InvalidState as exc:
            counts["refused"] += 1
            modeladmin.message_user(request, format_html("{}: {}", obj, admin_error_text(exc)), messages.WARNING)
            continue
        except PortalError as exc:
            counts["failed"] += 1
            modeladmin.message_user(request, format_html("{}: {}", obj, admin_error_text(exc)), messages.ERROR)
            continue
        level, text = outcome or (messages.SUCCESS, f"{verb} {obj}.")
        counts["ok" if level in (messages.SUCCESS, messages.INFO) else "failed"] += 1
        modeladmin.message_user(request, text, level)
    return counts


class ServiceDeleteMixin:
    """For ModelAdmins whose deletes go through a service that refuses while the object is in use.

    The ModelAdmin says `_in_use(obj) -> reason or None` and `_delete(request, obj) -> (level, message)`
    (the service call). Single and bulk deletes are refused up front with the reason, each delete is
    its own service call with its own message, and the service writes the audit event.
    """

    def _in_use(self, obj: Any) -> str | None:
        raise NotImplementedError

    def _delete(self, request: Any, obj: Any) -> tuple[int, str]:
        raise NotImplementedError

    def delete_view(self, request: Any, object_id: str, extra_context: dict | None = None) -> Any:
        obj = self.get_object(request, object_id)  # type: ignore[attr-defined]
        if obj is not None and (reason := self._in_use(obj)):
            self.message_user(request, reason, messages.ERROR)  # type: ignore[attr-defined]
            return HttpResponseRedirect(admin_url(obj))
        return super().delete_view(request, object_id, extra_context)  # type: ignore[misc]

    def delete_model(self, request: Any, obj: Any) -> None:
        per_object(self, request, [obj], lambda o: self._delete(request, o), verb="Deleted")

    def delete_queryset(self, request: Any, queryset: Any) -> None:
        per_object(self, request, queryset, lambda o: self._delete(request, o), verb="Deleted")

    def log_deletions(self, request: Any, queryset: Any) -> None:
        return None  # the service writes the audit event

    def response_delete(self, request: Any, obj_display: str, obj_id: Any) -> Any:
        return HttpResponseRedirect(admin_url(self.model, "changelist"))  # type: ignore[attr-defined]

    def delete_selected(self, request: Any, queryset: Any) -> Any:
        refused = []
        for obj in queryset:
            if reason := self._in_use(obj):
                refused.append(obj.pk)
                self.message_user(request, reason, messages.ERROR)  # type: ignore[attr-defined]
        rest = queryset.exclude(pk__in=refused)
        if not rest.exists():
            return None
        if request.POST.get("post"):
            self.delete_queryset(request, rest)
            return None
        return django_delete_selected(self, request, rest)

    delete_selected.allowed_permissions = ("delete",)  # type: ignore[attr-defined]
    delete_selected.short_description = "Delete selected %(verbose_name_plural)s (unused ones only)"  # type: ignore[attr-defined]


class ServiceSaveMixin:
    """For ModelAdmins whose save_model calls a service.

    A domain error raised in save_model is reported as an error message and the user is sent back
    to the form, without Django's "was changed successfully" message and without a LogEntry.
    The service call runs in a savepoint, so a half-done call leaves nothing behind.
    """

    _error_attr = "_portal_admin_error"

    def call_service(self, request, fn: Callable[[], Any]) -> Any:
        try:
            with transaction.atomic():
                return fn()
        except PortalError as exc:
            setattr(request, self._error_attr, exc)
            return None

    def _failed(self, request) -> PortalError | None:
        return getattr(request, self._error_attr, None)

    def log_addition(self, request, obj, message):
        if self._failed(request) is None:
            return super().log_addition(request, obj, message)

    def log_change(self, request, obj, message):
        if self._failed(request) is None:
            return super().log_change(request, obj, message)

    def save_related(self, request, form, formsets, change):
        if self._failed(request) is None:
            return super().save_related(request, form, formsets, change)

    def construct_change_message(self, request, form, formsets, add=False):
        if self._failed(request) is not None:
            return ""  # nothing was saved (and the formsets were not saved either)
        return super().construct_change_message(request, form, formsets, add)

    def _back_to_form(self, request):
        exc = self._failed(request)
        self.message_user(request, f"Not saved: {admin_error_text(exc)}", messages.ERROR)
        return HttpResponseRedirect(request.get_full_path())

    def response_add(self, request, obj, post_url_continue=None):
        if self._failed(request) is not None:
            return self._back_to_form(request)
        return super().response_add(request, obj, post_url_continue)

    def response_change(self, request, obj):
        if self._failed(request) is not None:
            return self._back_to_form(request)
        return super().response_change(request, obj)


class ReadOnlyAdminMixin:
    """Views only: rows that services or libvirt own are never added, changed or deleted here."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def note_context(note: str, extra_context: dict | None = None) -> dict:
    return {**(extra_context or {}), "changelist_note": note}


def live_vms_link(obj: Any, **changelist_filter: Any):
    """"N VMs" linking to the VM changelist filtered to `obj`'s live VMs (deleted ones have deleted_at).

    Lower apps (hosts, images) reach VMs only through the reverse relation `obj.vms`, never by import;
    the count is the `live_vms` annotation when the changelist made one.
    """
    count = getattr(obj, "live_vms", None)
    if count is None:
        count = obj.vms.filter(deleted_at__isnull=True).count()
    return changelist_link(obj.vms.model, f"{count} VM{'s' if count != 1 else ''}", **changelist_filter)
