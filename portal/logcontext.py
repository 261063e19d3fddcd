"""Who and what a log line is about: request id, user, VM and job, carried in context variables.

`RequestContextMiddleware` gives every request an id (the trusted proxy's X-Request-ID when
PORTAL_TRUSTED_PROXIES > 0 and it looks like an id, a new one otherwise), echoes it in the response's
X-Request-ID header and notes the request (for its user) and the VM its URL names. The job runner
wraps each job in `log_context(job_id=..., vm_id=...)`. `LogContext`, a filter on the console handler,
copies them onto every record (request_id, user, vm_id, job_id), for the JSON formatter and for
`PlainFormatter`, which appends them in brackets. Context variables follow asyncio tasks and
asgiref's thread hops, so a sync view's lines carry its request's id too.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.functional import empty

FIELDS = ("request_id", "user", "vm_id", "job_id")

_request_id: ContextVar[str | None] = ContextVar("log_request_id", default=None)
_request: ContextVar[HttpRequest | None] = ContextVar("log_request", default=None)
_values: ContextVar[dict[str, str] | None] = ContextVar("log_values", default=None)

# What a proxy's request id may look like (anything else is replaced by our own).
_GIVEN_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,200}$")
# URLs that name a VM: the web pages and the API.
_VM_PATH = re.compile(r"^/(?:api/)?vms/(\d+)(?:/|$)")


@contextmanager
def log_context(**values: Any) -> Iterator[None]:
    """Add user / vm_id / job_id (None: unknown) to every log record written inside the block."""
    token = _values.set({**(_values.get() or {}), **{k: str(v) for k, v in values.items() if v not in (None, "")}})
    try:
        yield
    finally:
        _values.reset(token)


def clear() -> None:
    """Forget the request's context (set, not reset: the response may be closed in another context)."""
    _request_id.set(None)
    _request.set(None)
    _values.set(None)


def current() -> dict[str, str]:
    """The request id, user, VM and job known here (only those that are known)."""
    found = dict(_values.get() or {})
    request_id = _request_id.get()
    if request_id:
        found["request_id"] = request_id
    request = _request.get()
    if request is not None and "user" not in found:
        user = _resolved_user(request)
        if user:
            found["user"] = user
    return found


def _resolved_user(request: HttpRequest) -> str | None:
    """The request's user if authentication already ran (never triggers a session or database lookup)."""
    user = request.__dict__.get("user")
    if user is None:
        return None
    try:
        if object.__getattribute__(user, "_wrapped") is empty:
            return None
    except AttributeError:
        pass  # a plain user object (DRF's authentication sets one)
    if not getattr(user, "is_authenticated", False):
        return None
    return str(user.get_username())


def request_id_for(request: HttpRequest) -> str:
    """The proxy's X-Request-ID behind trusted proxies (if it looks like an id), else a new one."""
    if settings.TRUSTED_PROXIES > 0:
        given = str(request.META.get(settings.REQUEST_ID_HEADER, "")).strip()
        if _GIVEN_ID.match(given):
            return given
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Sets the request's id, request and VM for its log lines; answers with X-Request-ID."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    @staticmethod
    def _enter(request: HttpRequest) -> None:
        # Cleared when the response is closed, not when this middleware returns: Django logs a 4xx/5xx
        # response ("Not Found: ...") after the whole middleware chain has returned.
        request_id = request_id_for(request)
        request.request_id = request_id  # type: ignore[attr-defined]
        match = _VM_PATH.match(request.path_info)
        _request_id.set(request_id)
        _request.set(request)
        _values.set({"vm_id": match.group(1)} if match else {})

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        self._enter(request)
        response = self.get_response(request)
        return self._finish(request, response)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        self._enter(request)
        get_response: Callable[[HttpRequest], Awaitable[HttpResponse]] = self.get_response
        response = await get_response(request)
        return self._finish(request, response)

    @staticmethod
    def _finish(request: HttpRequest, response: HttpResponse) -> HttpResponse:
        response["X-Request-ID"] = request.request_id  # type: ignore[attr-defined]
        response._resource_closers.append(clear)  # type: ignore[attr-defined]
        return response


class LogContext(logging.Filter):
    """Puts request_id, user, vm_id and job_id on each record (None where unknown; `extra=` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        known = current()
        record.instance = settings.INSTANCE_ID
        for field in FIELDS:
            if getattr(record, field, None) is None:
                setattr(record, field, known.get(field))
        return True


class PlainFormatter(logging.Formatter):
    """The plain log line, with ` [request_id=… user=… vm=… job=…]` (what is known) after the logger."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [f"{name}={value}" for name, value in (
            ("request_id", getattr(record, "request_id", None)), ("user", getattr(record, "user", None)),
            ("vm", getattr(record, "vm_id", None)), ("job", getattr(record, "job_id", None))) if value]
        record.context = f" [{' '.join(parts)}]" if parts else ""
        return super().format(record)
