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
from portal.exceptions import PortalError, user_message

from . import bolt, outbox, services, slack

log = logging.getLogger(__name__)


@csrf_exempt  # Slack signs its requests; Bolt verifies the signature and the timestamp
@require_http_methods(["POST"])
def slack_events(request: HttpRequest) -> HttpResponse:
    """Slash commands, button clicks and events from Slack (signed: anything else gets 401)."""
    problem = bolt.misconfiguration()
    if problem:
        log.error("Slack request refused: %s", problem)
        return HttpResponse("Slack is misconfigured on this portal.", status=503, content_type="text/plain")
    if not slack.is_configured():
        return HttpResponse("Slack is not configured on this portal.", status=404, content_type="text/plain")
    if not timestamp_well_formed(request.headers.get("X-Slack-Request-Timestamp")):
        # Bolt would int() it and fail with a 500: a request without a usable timestamp is not Slack's.
        log.info("Slack request refused: malformed X-Slack-Request-Timestamp")
        return HttpResponse("Invalid Slack request signature.", status=401, content_type="text/plain")
    handler = bolt.get_handler()
    if handler is None:
        return HttpResponse("Slack is not configured on this portal.", status=404, content_type="text/plain")
    with outbox.holding() as held:  # posts made while answering wait until Slack has its answer
        response = handler.handle(request)
    return outbox.send_after(response, held)


def timestamp_well_formed(value: str | None) -> bool:
    """A Slack request timestamp: Unix seconds, digits only (the age is checked with the signature)."""
    return value is not None and value.isascii() and value.isdigit() and len(value) <= 12


@login_required
@require_http_methods(["GET", "POST"])
def link_view(request: HttpRequest, token: str) -> HttpResponse:
    """Confirm, while signed in, that the Slack user who typed `/vm link` is you (POST links).

    The Slack user is named as Slack itself reports them (users.info on their verified user id),
    never by a name carried in the request.
    """
    try:
        link = services.link_token_get(token=token)
    except PortalError as exc:
        return render(request, "chatops/link.html", {"error": user_message(exc, user=request.user)},
                      status=exc.http_status)
    slack_user = slack.user_info(slack_user_id=link.slack_user_id)
    if request.method == "POST":
        try:
            identity = services.identity_link(actor=request.user, via=Via.WEB, token=token,
                                              slack_name=slack_user.label if slack_user else "")
        except PortalError as exc:
            return render(request, "chatops/link.html", {"error": user_message(exc, user=request.user)},
                          status=exc.http_status)
        messages.success(request, f"Your Slack account ({identity.slack_name or identity.slack_user_id}) is linked. "
                                  "Go back to Slack and type /vm list.")
        slack.respond(link.response_url, text=f":white_check_mark: Linked to the portal account "
                                              f"*{request.user.get_username()}*. Try `/vm list`.")
        return redirect("vms:list")
    taken = services.identity_get(team_id=link.team_id, slack_user_id=link.slack_user_id)
    current = services.identities_of(user=request.user).filter(team_id=link.team_id).first()
    return render(request, "chatops/link.html", {
        "link": link, "slack_user": slack_user, "current": current,
        "linked_elsewhere": services.LINKED_ELSEWHERE if taken and taken.user_id != request.user.pk else "",
    })


