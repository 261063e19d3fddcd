"""Console pages and the ticket endpoint: thin web adapters over consoles.services.

The pages fetch a fresh one-time ticket (POST, same origin, CSRF-protected) right before each
connection, then open the websocket on the portal's origin, or on the console proxy when
PORTAL_CONSOLE_PROXY_URL is set.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from portal.choices import Via
from portal.exceptions import NotFound, PortalError, error_body, user_message
from portal.web import portal_view
from vms.selectors import vm_get

from . import services
from .choices import ConsoleKind, SerialSharing
from .services import IssuedTicket


def _tier(request: HttpRequest, kind: str) -> str:
    """'proxy' when the console proxy is configured (screen only), unless the page asks for the portal."""
    if kind != ConsoleKind.SCREEN or not settings.CONSOLE_PROXY_URL:
        return "portal"
    return "portal" if request.POST.get("tier", request.GET.get("tier")) == "portal" else "proxy"


def _ticket_json(request: HttpRequest, issued: IssuedTicket) -> JsonResponse:
    path = f"vm/{issued.vm_id}/{issued.kind}/?ticket={issued.token}"
    if _tier(request, issued.kind) == "proxy":
        url, tier = f"{settings.CONSOLE_PROXY_URL}/{path}", "websockify"
    else:
        url, tier = f"/ws/consoles/{path}", "channels"
    return JsonResponse({"ticket": issued.token, "url": url, "tier": tier, "kind": issued.kind,
                         "view_only": issued.view_only, "expires_in": issued.ttl_seconds},
                        headers={"Cache-Control": "no-store"})


def _json_error(request: HttpRequest, exc: PortalError) -> JsonResponse:
    """The page's ticket endpoints answer errors exactly like the REST API (portal.exceptions.error_body)."""
    status, body, headers = error_body(exc, user=request.user)
    return JsonResponse(body, status=status, headers=headers)


def _page(request: HttpRequest, template: str, *, vm, kind: str, ticket_url: str, share=None,
          **extra) -> HttpResponse:
    return render(request, template, {
        "vm": vm,
        "kind": kind,
        "ticket_url": ticket_url,
        "share": share,
        "view_only": share is not None,
        "tier": _tier(request, kind),
        **extra,
    })


@login_required
@require_GET
@never_cache
@portal_view
def screen_view(request: HttpRequest, pk: int) -> HttpResponse:
    """The VM's screen in noVNC, with its share links for the owner."""
    vm = vm_get(user=request.user, vm_id=pk)
    shares = list(services.console_shares_for_vm(user=request.user, vm=vm)[:20])
    return _page(request, "consoles/screen.html", vm=vm, kind=ConsoleKind.SCREEN,
                 ticket_url=reverse("consoles:ticket", args=[vm.pk]), shares=shares,
                 can_share=request.user.is_staff or vm.owner_id == request.user.pk,
                 max_hours=settings.CONSOLE_SHARE_MAX_HOURS,
                 new_share=request.session.pop("console_new_share", None))


@login_required
@require_GET
@never_cache
@portal_view
def terminal_view(request: HttpRequest, pk: int) -> HttpResponse:
    """The VM's serial console in xterm.js."""
    vm = vm_get(user=request.user, vm_id=pk)
    conf = services.console_settings_for(vm=vm)
    return _page(request, "consoles/terminal.html", vm=vm, kind=ConsoleKind.SERIAL,
                 ticket_url=reverse("consoles:ticket", args=[vm.pk]), serial_sharing=conf.serial_sharing,
                 sharing_choices=SerialSharing.choices,
                 is_owner=request.user.is_staff or vm.owner_id == request.user.pk)


@login_required
@require_POST
def ticket_view(request: HttpRequest, pk: int) -> JsonResponse:
    """A fresh one-time ticket (JSON) for the VM's screen or terminal."""
    try:
        issued = services.console_ticket_issue(actor=request.user, via=Via.WEB, vm=pk,
                                               kind=request.POST.get("kind", ""),
                                               session_key=request.session.session_key or "")
    except PortalError as exc:
        return _json_error(request, exc)
    return _ticket_json(request, issued)


@login_required
@require_POST
@portal_view
def settings_view(request: HttpRequest, pk: int) -> HttpResponse:
    """The owner's choice for a second terminal viewer: refuse, or watch read-only."""
    services.console_settings_update(actor=request.user, via=Via.WEB, vm=pk,
                                     serial_sharing=request.POST.get("serial_sharing", ""))
    messages.success(request, "Saved who may watch this terminal.")
    return redirect("consoles:terminal", pk=pk)


@login_required
@require_POST
@portal_view
def share_create_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Create a view-only share link; the link is shown once, on the screen page."""
    created = services.console_share_create(
        actor=request.user, via=Via.WEB, vm=pk, recipient=request.POST.get("recipient", ""),
        hours=request.POST.get("hours", "4"), note=request.POST.get("note", ""))
    link = request.build_absolute_uri(reverse("consoles:shared", args=[created.token]))
    request.session["console_new_share"] = {"link": link, "recipient": created.share.recipient.get_username(),
                                            "expires_at": created.share.expires_at.isoformat()}
    messages.success(request, f"Share link created for {created.share.recipient.get_username()}: "
                              "copy it now, it is shown only once.")
    return redirect(f"{reverse('consoles:screen', args=[pk])}#share")


@login_required
@require_POST
@portal_view
def share_revoke_view(request: HttpRequest, share_id: int) -> HttpResponse:
    """Revoke a share link; an open view closes within a few seconds."""
    share = services.console_share_revoke(actor=request.user, via=Via.WEB, share=share_id)
    messages.success(request, f"Revoked the share with {share.recipient.get_username()}.")
    return redirect(f"{reverse('consoles:screen', args=[share.vm_id])}#share")


@login_required
@require_GET
@never_cache
@portal_view
def shared_screen_view(request: HttpRequest, token: str) -> HttpResponse:
    """A colleague's view-only screen, through a share link made for the signed-in user."""
    try:
        share = services.console_share_resolve(user=request.user, token=token)
    except NotFound as exc:  # missing, someone else's, or ended: a 404 that says which in plain words
        return render(request, "consoles/share_missing.html", {"error": user_message(exc, user=request.user)},
                      status=404)
    return _page(request, "consoles/screen.html", vm=share.vm, kind=ConsoleKind.SCREEN,
                 ticket_url=reverse("consoles:shared-ticket", args=[token]), share=share)


@login_required
@require_POST
def shared_ticket_view(request: HttpRequest, token: str) -> JsonResponse:
    """A view-only ticket through a share link."""
    try:
        share = services.console_share_resolve(user=request.user, token=token)
        issued = services.console_ticket_issue(actor=request.user, via=Via.WEB, vm=share.vm_id,
                                               kind=ConsoleKind.SCREEN,
                                               session_key=request.session.session_key or "", share=share)
    except PortalError as exc:
        return _json_error(request, exc)
    return _ticket_json(request, issued)


@login_required
@require_GET
@never_cache
def console_link_view(request: HttpRequest, token: str) -> HttpResponse:
    """A one-time console link (Slack, API, CLI): spent by its own user, then on to the console page."""
    try:
        link = services.console_link_redeem(actor=request.user, token=token)
    except PortalError as exc:
        return render(request, "consoles/console_link.html", {"error": user_message(exc, user=request.user)},
                      status=exc.http_status)
    return redirect(f"consoles:{link.kind}", pk=link.vm_id)
