"""Web adapters of chatops: the Slack endpoint and the account-link page."""

from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from portal.choices import Via
from portal.exceptions import PortalError
from portal.web import error_text

from . import bolt, services

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


@login_required
@require_http_methods(["GET"])
def console_link_view(request: HttpRequest, token: str) -> HttpResponse:
    """A one-time console link from `/vm console`: spent by its own user, then on to the console page."""
    try:
        link = services.console_link_redeem(actor=request.user, token=token)
    except PortalError as exc:
        status = {"not_found": 404, "forbidden": 403}.get(exc.code, 410)
        return render(request, "chatops/console_link.html", {"error": error_text(exc, user=request.user)},
                      status=status)
    return redirect(f"consoles:{link.kind}", pk=link.vm_id)
