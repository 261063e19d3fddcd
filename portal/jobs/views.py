"""Job pages: every job the user may see, and one job with its progress, result and log."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from portal.choices import JobStatus, Via
from portal.live import live_context
from portal.web import portal_view, safe_next

from .labels import job_label
from .selectors import job_get, job_visible, with_children_count
from .services import job_can_cancel, job_cancel

PAGE_SIZE = 50


@login_required
@require_GET
@portal_view
def job_list_view(request: HttpRequest) -> HttpResponse:
    """Every job the user may see, newest first, with progress, step and result."""
    status = request.GET.get("status", "")
    status = status if status in JobStatus.values else ""
    jobs = with_children_count(job_visible(user=request.user)).order_by("-created_at")
    if status:
        jobs = jobs.filter(status=status)
    page = Paginator(jobs, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "jobs/list.html", {
        "page": page,
        "jobs": list(page),
        "status": status,
        "status_choices": JobStatus.choices,
        **live_context(),
    })


@login_required
@require_GET
@portal_view(fallback="jobs:list")
def job_detail_view(request: HttpRequest, job_id: str) -> HttpResponse:
    """One job: progress, step, result or error, and its log (tracebacks only for admins); a batch's parent
    lists its children (each with its own progress), a child links to its parent."""
    job = job_get(user=request.user, job_id=job_id)
    children = list(job_visible(user=request.user).filter(parent=job).order_by("created_at"))
    parent = job_visible(user=request.user).filter(pk=job.parent_id).first() if job.parent_id else None
    return render(request, "jobs/detail.html", {"job": job, "can_cancel": job_can_cancel(job), "children": children,
                                                "parent": parent, **live_context()})


@login_required
@require_POST
@portal_view(fallback="jobs:list")
def job_cancel_view(request: HttpRequest, job_id: str) -> HttpResponse:
    """Cancel: an external job's plugin is asked to stop; a pending job of a cancellable kind stops at once."""
    job = job_cancel(actor=request.user, via=Via.WEB, job_id=job_id)
    if job.status == JobStatus.CANCELLED:
        messages.success(request, f"{job_label(job.kind)} {job.target_name} was cancelled.")
    else:
        messages.info(request, f"Asked the plugin to cancel {job_label(job.kind)} {job.target_name}.")
    return redirect(safe_next(request, "jobs:detail", job_id=job.pk))
