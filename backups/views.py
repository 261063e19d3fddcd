"""Backups on the web: the Backups panel of the VM page (registered with vms.panels, since vms never
imports backups) and the "My backups" page, where backups of deleted VMs can be restored too.

Thin views: parse the form, call one backups service or selector, redirect with a message (errors
become a message through portal.web.portal_view).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from portal.choices import Via
from portal.web import portal_view, safe_next
from vms.choices import VMStatus
from vms.selectors import vm_get

from . import selectors, services
from .models import Backup, BackupSchedule

PAGE_SIZE = 50
BUSY = (Backup.Status.QUEUED, Backup.Status.RUNNING, Backup.Status.DELETING)
KIND_CHOICES = (("auto", "Automatic (incremental when possible)"), ("full", "Full"),
                ("incremental", "Incremental"))


def _schedule(vm) -> BackupSchedule | None:
    return BackupSchedule.objects.filter(vm=vm).first()


def panel_context(request: HttpRequest, vm) -> dict:
    """What the Backups panel of the VM page shows (also registered as the panel's context)."""
    backups = selectors.vm_backups(actor=request.user, vm=vm)
    return {
        "backups": backups,
        "backups_busy": any(b.status in BUSY for b in backups),
        "backup_schedule": _schedule(vm),
        "backup_kinds": KIND_CHOICES,
        "vm_stopped": vm.status == VMStatus.STOPPED,
        "restore_name_default": f"{vm.name}-restored"[:63],
    }


def _back(request: HttpRequest, vm_id: int | None) -> str:
    if vm_id is None:
        return safe_next(request, "backups:list")
    return safe_next(request, reverse("vms:detail", args=[vm_id]) + "#backups")


@login_required
@require_http_methods(["GET", "POST"])
@portal_view
def vm_backups_view(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: the Backups panel alone (the page script fetches it again while a backup runs). POST: back up now."""
    vm = vm_get(user=request.user, vm_id=pk)
    if request.method == "POST":
        backup, _job, message = services.backup_create(
            actor=request.user, via=Via.WEB, vm=vm, kind=request.POST.get("kind") or "auto",
            mode="push", note=request.POST.get("note", ""))
        messages.success(request, message)
        return redirect(reverse("vms:detail", args=[vm.pk]) + "#backups")
    response = render(request, "backups/_panel.html", {"vm": vm, **panel_context(request, vm)})
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
@portal_view
def vm_schedule_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Set the VM's backup schedule, or (op=off) stop it."""
    vm = vm_get(user=request.user, vm_id=pk)
    if request.POST.get("op") == "off":
        services.backup_schedule_remove(actor=request.user, via=Via.WEB, vm=vm)
        messages.success(request, f"{vm.name} is no longer backed up on a schedule; its backups stay.")
    else:
        schedule = services.backup_schedule_set(
            actor=request.user, via=Via.WEB, vm=vm, enabled=request.POST.get("enabled", "on") == "on",
            interval_hours=request.POST.get("interval_hours", ""), incrementals=request.POST.get("incrementals", ""),
            keep_chains=request.POST.get("keep_chains", ""))
        messages.success(request, f"Saved: {vm.name} is backed up every {schedule.interval_hours} h.")
    return redirect(reverse("vms:detail", args=[vm.pk]) + "#backups")


@login_required
@require_POST
@portal_view(fallback="backups:list")
def backup_restore_view(request: HttpRequest, backup_id: int) -> HttpResponse:
    """Restore to a new VM with the given name, or (in_place) onto its stopped VM; confirmed in the page first."""
    backup = selectors.backup_get(actor=request.user, key=backup_id)
    in_place = request.POST.get("in_place") == "1"
    vm, _job, message = services.backup_restore(actor=request.user, via=Via.WEB, backup=backup,
                                                name=None if in_place else request.POST.get("name", ""),
                                                in_place=in_place)
    messages.success(request, message)
    return redirect(reverse("vms:detail", args=[vm.pk]))


@login_required
@require_POST
@portal_view(fallback="backups:list")
def backup_delete_view(request: HttpRequest, backup_id: int) -> HttpResponse:
    """Delete a backup and its files (confirmed in the page first)."""
    backup = selectors.backup_get(actor=request.user, key=backup_id)
    vm_id = backup.vm_id
    _backup, _job, message = services.backup_delete(actor=request.user, via=Via.WEB, backup=backup)
    messages.success(request, message)
    return redirect(_back(request, vm_id))


@login_required
@require_POST
@portal_view(fallback="backups:list")
def backup_finish_view(request: HttpRequest, backup_id: int) -> HttpResponse:
    """Pull mode: end the NBD export."""
    backup = selectors.backup_get(actor=request.user, key=backup_id)
    _backup, _job, message = services.backup_finish(actor=request.user, via=Via.WEB, backup=backup)
    messages.success(request, message)
    return redirect(_back(request, backup.vm_id))


@login_required
@require_GET
@portal_view
def backup_list_view(request: HttpRequest) -> HttpResponse:
    """My backups: every backup you may see, also of deleted VMs (restore them to a new VM from here)."""
    qs = selectors.backups_visible(request.user).select_related("vm", "owner")
    deleted_only = request.GET.get("deleted") == "1"
    if deleted_only:
        qs = qs.filter(vm__isnull=True)
    page = Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "backups/list.html", {"page": page, "backups": list(page), "deleted_only": deleted_only,
                                                 "busy": BUSY})
