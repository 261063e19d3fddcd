"""Backups in the admin: read-only rows (the jobs and libvirt own them) with their VM, owner, chain and size;
deletes and schedule changes go through backups.services. Backup storage domains are storage's
(StoragePool with content "backup")."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages

from portal.admin_helpers import (
    EMPTY,
    ServiceDeleteMixin,
    ServiceSaveMixin,
    badge,
    human_bytes,
    job_report,
    link,
    progress_bar,
    when,
)
from portal.choices import Via

from . import services
from .models import Backup, BackupSchedule


@admin.register(Backup)
class BackupAdmin(ServiceDeleteMixin, admin.ModelAdmin):
    list_display = ("id", "vm_cell", "owner_cell", "kind", "mode", "status_cell", "size", "chain", "pool_cell",
                    "created")
    list_filter = ("status", "kind", "mode", "created_via", "pool")
    search_fields = ("vm_name", "owner__username", "uuid", "note")
    list_select_related = ("vm", "owner", "pool", "parent")
    date_hierarchy = "created_at"
    readonly_fields = ("uuid", "vm_cell", "vm_name", "owner_cell", "group", "kind", "mode", "status_cell", "chain",
                       "pool_cell", "checkpoint", "size", "disks_cell", "nbd_uri", "vm_config", "note", "last_error",
                       "created_by", "created_via", "schedule", "created_at", "started_at", "finished_at")
    fields = readonly_fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # (the change page shows the read-only fields)

    @admin.display(description="VM", ordering="vm_name")
    def vm_cell(self, obj: Backup):
        return link(obj.vm, obj.vm_name) if obj.vm_id else f"{obj.vm_name} (deleted)"

    @admin.display(description="owner", ordering="owner__username")
    def owner_cell(self, obj: Backup):
        return link(obj.owner, obj.owner.get_username())

    @admin.display(description="status", ordering="status")
    def status_cell(self, obj: Backup):
        if obj.status == Backup.Status.RUNNING:
            return progress_bar(obj.progress, "running")
        tone = {"ready": "ok", "failed": "bad", "queued": "busy", "deleting": "busy"}.get(obj.status)
        return badge(obj.status, obj.get_status_display(), tone=tone, title=obj.last_error[:300])

    @admin.display(description="size", ordering="size_bytes")
    def size(self, obj: Backup) -> str:
        return human_bytes(obj.size_bytes) if obj.size_bytes else EMPTY

    @admin.display(description="chain (parent)")
    def chain(self, obj: Backup):
        return link(obj.parent, f"#{obj.parent_id} ({obj.parent.kind})") if obj.parent_id else "full (chain start)"

    @admin.display(description="storage domain", ordering="pool__name")
    def pool_cell(self, obj: Backup):
        return link(obj.pool, obj.pool.name) if obj.pool_id else EMPTY

    @admin.display(description="disks")
    def disks_cell(self, obj: Backup) -> str:
        return ", ".join(f"{d.get('target', '?')} {human_bytes(d.get('size_bytes') or 0)}"
                         for d in obj.disks or [] if isinstance(d, dict)) or EMPTY

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Backup):
        return when(obj.created_at)

    # ServiceDeleteMixin: the service refuses what an incremental depends on, and removes the files.
    def _in_use(self, obj: Backup) -> str | None:
        return None  # backups.services.backup_delete says why not, per backup

    def _delete(self, request: Any, obj: Backup) -> tuple[int, str]:
        _backup, job, message = services.backup_delete(actor=request.user, via=Via.ADMIN, backup=obj)
        return job_report(job, message) if job is not None else (messages.SUCCESS, message)


class BackupScheduleForm(forms.ModelForm):
    class Meta:
        model = BackupSchedule
        fields = ("vm", "enabled", "interval_hours", "incrementals", "keep_chains")


@admin.register(BackupSchedule)
class BackupScheduleAdmin(ServiceSaveMixin, admin.ModelAdmin):
    form = BackupScheduleForm
    list_display = ("vm_cell", "enabled", "interval_hours", "incrementals", "keep_chains", "next_run",
                    "last_run", "last_error_short")
    list_filter = ("enabled",)
    search_fields = ("vm__name", "vm__owner__username")
    list_select_related = ("vm",)
    autocomplete_fields: tuple[str, ...] = ()
    raw_id_fields = ("vm",)

    def get_readonly_fields(self, request, obj=None):
        base = ("next_run_at", "last_run_at", "last_error", "created_by", "updated_at")
        return ("vm", *base) if obj is not None else base

    @admin.display(description="VM", ordering="vm__name")
    def vm_cell(self, obj: BackupSchedule):
        return link(obj.vm, obj.vm.name)

    @admin.display(description="next run", ordering="next_run_at")
    def next_run(self, obj: BackupSchedule):
        return when(obj.next_run_at)

    @admin.display(description="last run", ordering="last_run_at")
    def last_run(self, obj: BackupSchedule):
        return when(obj.last_run_at)

    @admin.display(description="last error")
    def last_error_short(self, obj: BackupSchedule) -> str:
        return obj.last_error[:80] or EMPTY

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        saved = self.call_service(request, lambda: services.backup_schedule_set(
            actor=request.user, via=Via.ADMIN, vm=data.get("vm") or obj.vm, enabled=data["enabled"],
            interval_hours=data["interval_hours"], incrementals=data["incrementals"],
            keep_chains=data["keep_chains"]))
        if saved is not None:
            obj.pk = saved.pk  # the admin's redirect and messages name the saved row

    def delete_model(self, request, obj):
        services.backup_schedule_remove(actor=request.user, via=Via.ADMIN, vm=obj.vm)

    def delete_queryset(self, request, queryset):
        for schedule in queryset.select_related("vm"):
            services.backup_schedule_remove(actor=request.user, via=Via.ADMIN, vm=schedule.vm)
