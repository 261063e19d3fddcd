"""Quota pages: your usage and requests (every pending one for administrators), and the decisions."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from portal.choices import Via
from portal.exceptions import PortalError
from portal.web import form_error, portal_view

from .forms import DecisionForm, QuotaRequestForm
from .selectors import quota_request_changes, quota_request_list, quota_usage
from .services import quota_request_approve, quota_request_cancel, quota_request_create, quota_request_deny


def _usage_context(user) -> dict:
    return {"usage": quota_usage(user=user)}


@login_required
@require_http_methods(["GET", "POST"])
@portal_view(fallback="quotas:requests")
def quota_request_list_view(request: HttpRequest) -> HttpResponse:
    """Your quota and requests (all pending ones for administrators), and the form to ask for more."""
    form = QuotaRequestForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            created = quota_request_create(actor=request.user, via=Via.WEB, **form.cleaned_data)
        except PortalError as exc:
            form_error(form, exc, user=request.user)
        else:
            messages.success(request, f"Quota request #{created.pk} was sent to the administrators.")
            return redirect("quotas:requests")
    requests_qs = quota_request_list(user=request.user)
    rows = [(r, quota_request_changes(r)) for r in requests_qs[:100]]
    status = 400 if request.method == "POST" else 200
    return render(request, "quotas/requests.html", {
        "form": form, "rows": rows, "decision_form": DecisionForm(), **_usage_context(request.user),
    }, status=status)


@login_required
@require_POST
@portal_view(fallback="quotas:requests")
def quota_request_decide_view(request: HttpRequest, pk: int, decision: str) -> HttpResponse:
    form = DecisionForm(request.POST)
    note = form.cleaned_data["note"] if form.is_valid() else ""
    if decision == "approve":
        done = quota_request_approve(actor=request.user, via=Via.WEB, request=pk, note=note)
    elif decision == "deny":
        done = quota_request_deny(actor=request.user, via=Via.WEB, request=pk, note=note)
    elif decision == "cancel":
        done = quota_request_cancel(actor=request.user, via=Via.WEB, request=pk)
    else:
        raise Http404("No such decision: approve, deny or cancel.")
    messages.success(request, f"Quota request #{done.pk} {done.get_status_display().lower()}.")
    return redirect("quotas:requests")
