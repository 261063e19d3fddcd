"""REST adapter glue: the one place domain errors become HTTP responses."""

from __future__ import annotations

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .exceptions import PortalError, QuotaExceeded, ValidationFailed


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
        return Response(body, status=exc.http_status)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "code" not in response.data:
        codes = exc.get_codes() if hasattr(exc, "get_codes") else None
        if isinstance(codes, str):
            response.data["code"] = codes
    return response
