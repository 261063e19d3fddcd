"""Web adapters of chatops: the Slack endpoint, the account-link page and the quota-request pages."""

from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from portal.choices import Via
from portal.exceptions import PortalError
from portal.quota_requests import (
    quota_request_approve,
    quota_request_cancel,
    quota_request_changes,
    quota_request_create,
    quota_request_deny,
    quota_request_list,
)
from portal.quotas import quota_usage
from portal.web import error_text, form_error, portal_view

from . import bolt, services
from .forms import DecisionForm, QuotaRequestForm

log = logging.getLogger(__name__)


@csrf_exempt  # Slack signs its requests; Bolt verifies the signature and the timestamp
@require_http_methods(["POST"])
def slack_events(request: HttpRequest) -> HttpResponse:
    """Slash commands, button clicks and events from Slack (signed: anything else gets 401)."""
    problem = bolt.misconfiguration()
    if problem:
        log.error("Slack request refused: %s", problem)
        return HttpResponse("Slack is misconfigured on this portal.", status=503, content_type="text/plain")
    handler = bolt.get_handler()
    if handler is None:
        return HttpResponse("Slack is not configured on this portal.", status=404, content_type="text/plain")
    return handler.handle(request)


@login_required
@require_http_methods(["GET", "POST"])
def link_view(request: HttpRequest, token: str) -> HttpResponse:
    """Confirm, while signed in, that the Slack user who typed `/vm link` is you (POST links)."""
    try:
        link = services.link_token_get(token=token)
    except PortalError as exc:
        return render(request, "chatops/link.html", {"error": error_text(exc, user=request.user)}, status=410
                      if exc.code == "invalid_state" else 404)
    if request.method == "POST":
        try:
            identity = services.identity_link(actor=request.user, via=Via.WEB, token=token)
        except PortalError as exc:
            return render(request, "chatops/link.html", {"error": error_text(exc, user=request.user)}, status=409)
        messages.success(request, f"Your Slack account ({identity.slack_name or identity.slack_user_id}) is linked. "
                                  "Go back to Slack and type /vm list.")
        from . import slack

        slack.respond(link.response_url, text=f":white_check_mark: Linked to the portal account "
                                              f"*{request.user.get_username()}*. Try `/vm list`.")
        return redirect("vms:list")
    current = services.identities_of(user=request.user).filter(team_id=link.team_id).first()
    return render(request, "chatops/link.html", {"link": link, "current": current})


def _usage_context(user) -> dict:
    return {"usage": quota_usage(user=user)}


@login_required
@require_http_methods(["GET", "POST"])
@portal_view(fallback="chatops:quota_requests")
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
            return redirect("chatops:quota_requests")
    requests_qs = quota_request_list(user=request.user)
    rows = [(r, quota_request_changes(r)) for r in requests_qs[:100]]
    status = 400 if request.method == "POST" else 200
    return render(request, "chatops/quota_requests.html", {
        "form": form, "rows": rows, "decision_form": DecisionForm(), **_usage_context(request.user),
    }, status=status)


@login_required
@require_POST
@portal_view(fallback="chatops:quota_requests")
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
        return HttpResponse("Unknown decision.", status=404, content_type="text/plain")
    messages.success(request, f"Quota request #{done.pk} {done.get_status_display().lower()}.")
    return redirect("chatops:quota_requests")
