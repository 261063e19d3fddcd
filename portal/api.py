"""REST adapter glue: the one place domain errors become HTTP responses, plus shared API pieces.

Every error body has the same shape: `{"code": ..., "detail": ...}`, plus `errors` (field -> list of
messages) for invalid input, or the domain error's fields (`resource`, `requested`, `limit`,
`in_use` for a quota; `status` for a wrong state).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus
from inspect import iscoroutinefunction

from django.conf import settings
from django.core.exceptions import (
    BadRequest,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import sync_and_async_middleware
from rest_framework import serializers
from rest_framework.exceptions import ValidationError as DRFValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import exception_handler as drf_exception_handler

from .exceptions import PortalError, QuotaExceeded, ValidationFailed
from .net import request_client_ip


def _first_message(errors) -> str:
    """The first human message in DRF's nested error structure."""
    if isinstance(errors, dict):
        for value in errors.values():
            return _first_message(value)
    if isinstance(errors, list):
        for value in errors:
            return _first_message(value)
        return "Invalid input."
    return str(errors)


def _bad_request_body(exc: Exception) -> tuple[int, dict[str, str]]:
    """Status and body for Django's refusals of a request (too big, too many fields, suspicious)."""
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return 413, {"code": "too_large", "detail": f"The request body is too large (at most {limit} bytes)."}
    if isinstance(exc, TooManyFieldsSent):
        detail = f"Too many fields in the request (at most {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS})."
    elif isinstance(exc, TooManyFilesSent):
        detail = f"Too many files in the request (at most {settings.DATA_UPLOAD_MAX_NUMBER_FILES})."
    else:
        detail = "Bad request."
    return 400, {"code": "bad_request", "detail": detail}


def exception_handler(exc, context):
    """Map PortalError subclasses to their status and a stable JSON body; DRF handles the rest."""
    if isinstance(exc, SuspiciousOperation | BadRequest):
        # Django would answer these with an HTML page (its debug page with DEBUG on): keep the API's JSON,
        # and log them where Django logs them.
        logging.getLogger(f"django.security.{type(exc).__name__}").warning("%s", exc)
        status, body = _bad_request_body(exc)
        return Response(body, status=status)
    if isinstance(exc, ValidationFailed):
        body = {"code": exc.code, "detail": exc.message, "errors": exc.errors}
        return Response(body, status=exc.http_status)
    if isinstance(exc, QuotaExceeded):
        return Response(exc.as_dict(), status=exc.http_status)
    if isinstance(exc, PortalError):
        body = {"code": exc.code, "detail": exc.message}
        body.update({k: v for k, v in exc.fields.items() if k != "libvirt_code"})
        return Response(body, status=exc.http_status)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, DRFValidationError):
        # Serializer (shape) errors look like the service's ValidationFailed: one format for clients.
        errors = response.data if isinstance(response.data, dict) else {"non_field_errors": response.data}
        response.data = {"code": ValidationFailed.code, "detail": _first_message(errors), "errors": errors}
        return response
    if isinstance(response.data, dict) and "code" not in response.data:
        codes = exc.get_codes() if hasattr(exc, "get_codes") else None
        if isinstance(codes, str):
            response.data["code"] = codes
    return response


class ClientScopedRateThrottle(ScopedRateThrottle):
    """DRF's scoped throttle, keyed by the client address as portal.net decides it (trusted proxies only)."""

    def get_ident(self, request) -> str:
        """The client's address: X-Forwarded-For counts only behind PORTAL_TRUSTED_PROXIES proxies."""
        return request_client_ip(request)


# Errors Django answers itself under /api/ (no such URL, a crash, a refused Host header), as JSON.
_PLAIN_ERRORS = {
    400: ("bad_request", "Bad request."),
    403: ("forbidden", "Forbidden."),
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "Method not allowed."),
    413: ("too_large", "The request body is too large."),
    500: ("server_error", "Internal server error."),
}


def _api_error_as_json(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """An error response for an /api/ path that is not JSON (Django's own pages) becomes the API's JSON."""
    if (response.status_code < 400 or not request.path_info.startswith("/api/")
            or hasattr(response, "accepted_renderer")  # DRF's (JSON, or the browsable API a browser asked for)
            or "json" in response.get("Content-Type", "")):
        return response
    status = response.status_code
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    code, detail = _PLAIN_ERRORS.get(status, (phrase.lower().replace(" ", "_"), f"{phrase}."))
    return JsonResponse({"code": code, "detail": detail}, status=status)


@sync_and_async_middleware
def api_json_errors_middleware(get_response: Callable) -> Callable:
    """Middleware: every error under /api/ is JSON in every mode (DEBUG's HTML pages included)."""
    if iscoroutinefunction(get_response):
        async def middleware(request: HttpRequest) -> HttpResponse:
            return _api_error_as_json(request, await get_response(request))
    else:
        def middleware(request: HttpRequest) -> HttpResponse:
            return _api_error_as_json(request, get_response(request))
    return middleware


class Pagination(PageNumberPagination):
    """`?page=N`, and `?page_size=` up to 200 (default 50 from settings)."""

    page_size_query_param = "page_size"
    max_page_size = 200


# --- documented error bodies (used in extend_schema responses) -----------------------------------

class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable machine-readable code, e.g. not_found, invalid_state.")
    detail = serializers.CharField(help_text="Human-readable message.")


class ValidationErrorSerializer(ErrorSerializer):
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()),
                                   help_text="Field name -> messages.")


class QuotaErrorSerializer(ErrorSerializer):
    resource = serializers.CharField()
    requested = serializers.IntegerField()
    limit = serializers.IntegerField()
    in_use = serializers.IntegerField()
