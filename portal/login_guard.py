"""Web login brute-force protection: django-axes, wired to the portal's rules.

Axes counts failed logins per username and client address in the database (so every web process
counts alike) and refuses that pair for settings.AXES_COOLOFF_TIME once AXES_FAILURE_LIMIT is
reached. The client address is portal.net's trusted-proxies rule (AXES_CLIENT_IP_CALLABLE). This
module says which logins are counted, answers a locked-out login with the login form and a clear
error (HTTP 429), and writes an audit row for each refused login.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from django.conf import settings
from django.forms.utils import ErrorDict
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import Resolver404, resolve

from .audit import audit
from .choices import Via
from .models import AuditEvent

LOCKED_STATUS = 429


TOKEN_PATH = "/api/auth/token/"


def not_counted(request: Any, credentials: dict | None = None) -> bool:
    """Axes' whitelist: nothing under /api/ but the token endpoint signs in with a password (token requests
    count and are refused like the web login's: a locked-out username gets no token either; the endpoint
    also keeps its own per-address throttle)."""
    path = str(getattr(request, "path", "") or "")
    return path.startswith("/api/") and path != TOKEN_PATH


def lockout_minutes() -> int:
    return max(1, math.ceil(settings.AXES_COOLOFF_TIME.total_seconds() / 60))


def lockout_message() -> str:
    minutes = lockout_minutes()
    return (f"Too many failed sign-in attempts for this username from your address. Try again in "
            f"{minutes} minute{'s' if minutes != 1 else ''}, or ask an administrator to unlock it.")


def _login_page(request: HttpRequest) -> HttpResponse | None:
    """The login page the form was posted to, as a GET shows it."""
    try:
        match = resolve(request.path_info)
    except Resolver404:
        return None
    page_request = copy.copy(request)
    page_request.method = "GET"
    return match.func(page_request, *match.args, **match.kwargs)


def lockout_response(request: HttpRequest, original_response: Any = None,
                     credentials: dict | None = None) -> HttpResponse:
    """The login page again (the portal's or the admin's), its form saying why it refused; 429."""
    message = lockout_message()
    if str(getattr(request, "path", "") or "").startswith("/api/"):  # the API's error format
        api_response = JsonResponse({"code": "locked_out", "detail": message}, status=LOCKED_STATUS)
        api_response["Retry-After"] = str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
        return api_response
    if not isinstance(original_response, HttpResponse):
        # axes 8's async middleware passes the credentials where the view's response belongs.
        original_response = _login_page(request)
    context = getattr(original_response, "context_data", None)
    form = context.get("form") if isinstance(context, dict) else None
    if isinstance(original_response, TemplateResponse) and form is not None:
        form.cleaned_data = {}
        form._errors = ErrorDict()
        form.add_error(None, message)  # the admin's login page shows the form's own errors
        context = {**(context or {}), "login_locked": message}  # the portal's login page shows this one
        page = TemplateResponse(request, original_response.template_name, context, status=LOCKED_STATUS)
        page.render()
        response: HttpResponse = page
    else:
        response = HttpResponse(message, status=LOCKED_STATUS, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
    return response


def audit_locked_out(sender: Any, request: Any = None, username: str | None = None,
                     ip_address: str | None = None, **kwargs: Any) -> None:
    """axes' user_locked_out signal (sent for the login that reached the limit and each one refused after)."""
    path = str(getattr(request, "path", "") or "")
    audit(actor="anonymous", via=Via.ADMIN if path.startswith("/admin/") else Via.WEB, action="login.locked_out",
          target_type="user", target_name=(username or "")[:150], outcome=AuditEvent.Outcome.DENIED,
          message=f"Sign-in refused: {settings.AXES_FAILURE_LIMIT} or more failed attempts from "
                  f"{ip_address or 'an unknown address'}; locked for {lockout_minutes()} min",
          data={"client": ip_address or "", "path": path})
