"""REST adapter glue: the one place domain errors become HTTP responses, plus shared API pieces.

Every error body has the same shape: `{"code": ..., "detail": ...}`, plus `errors` (field -> list of
messages) for invalid input, or the domain error's fields (`resource`, `requested`, `limit`,
`in_use` for a quota; `status` for a wrong state).
"""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.exceptions import ValidationError as DRFValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .exceptions import PortalError, QuotaExceeded, ValidationFailed


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


def exception_handler(exc, context):
    """Map PortalError subclasses to their status and a stable JSON body; DRF handles the rest."""
    if isinstance(exc, ValidationFailed):
        body = {"code": exc.code, "detail": exc.message, "errors": exc.errors}
        return Response(body, status=exc.http_status)
    if isinstance(exc, QuotaExceeded):
        return Response(exc.as_dict(), status=exc.http_status)
    if isinstance(exc, PortalError):
        body = {"code": exc.code, "detail": exc.message}
        body.update({k: v for k, v in exc.fields.items() if k != "libvirt_code"})
        # A refusal that says when to come back (429) says it in the standard header too.
        headers = {"Retry-After": str(exc.fields["retry_after"])} if exc.fields.get("retry_after") else None
        return Response(body, status=exc.http_status, headers=headers)
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
