"""Web adapter glue: the one place domain errors become what a browser sees.

`portal_view` wraps every server-rendered view: NotFound becomes the 404 page, any other
PortalError becomes an error message and a redirect back to where the user came from.
`form_error` puts a domain error on a Django form instead (next to its field, or at the top), for
views that re-render a form. Both word errors with `portal.exceptions.user_message`, so the same
error reads the same on every door and never shows a libvirt URI or a traceback to non-admins.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import resolve_url
from django.utils.http import url_has_allowed_host_and_scheme

from .exceptions import (
    HypervisorError,
    NotFound,
    PortalError,
    ValidationFailed,
    user_message,
)

__all__ = ["form_error", "is_web_404", "portal_view", "safe_next"]

log = logging.getLogger(__name__)


def is_web_404(exc: PortalError) -> bool:
    """Missing (or someone else's) objects are a 404; a domain lost on the host is not."""
    return isinstance(exc, NotFound) and not isinstance(exc, HypervisorError)


def safe_next(request: HttpRequest, fallback: str, *args: Any, **kwargs: Any) -> str:
    """Where to send the user back: a same-site `next` field, then the Referer, then `fallback`."""
    for candidate in (request.POST.get("next"), request.GET.get("next"), request.META.get("HTTP_REFERER")):
        if candidate and url_has_allowed_host_and_scheme(
                candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
            return candidate
    return resolve_url(fallback, *args, **kwargs)


def portal_view(view: Callable | None = None, *, fallback: str = "vms:list") -> Callable:
    """Decorate a view so a PortalError becomes a 404 (NotFound) or a message and a redirect."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                return fn(request, *args, **kwargs)
            except PortalError as exc:
                if is_web_404(exc):
                    raise Http404(exc.message) from None
                log.info("%s %s: %s (%s)", request.method, request.path, exc.code, exc.message)
                messages.error(request, user_message(exc, user=request.user))
                return HttpResponseRedirect(safe_next(request, fallback))

        return wrapper

    return decorate(view) if view is not None else decorate


def form_error(form: forms.Form, exc: PortalError, *, user: Any = None) -> None:
    """Show `exc` on `form`: each ValidationFailed message next to its field, anything else on top."""
    if isinstance(exc, ValidationFailed):
        for field, msgs in exc.errors.items():
            target = field if field in form.fields else None
            for msg in msgs:
                form.add_error(target, msg)
        return
    form.add_error(None, user_message(exc, user=user))
