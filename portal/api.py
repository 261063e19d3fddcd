"""REST adapter glue: the one place domain errors become HTTP responses, plus shared API pieces.

Every error body has the same shape: `{"code": ..., "detail": ...}`, plus `errors` (field -> list of
messages) for invalid input, or the domain error's fields (`resource`, `requested`, `limit`,
`in_use` for a quota; `status` for a wrong state). `detail` is always plain words without host
internals; staff also get the hypervisor's own words in `admin_detail`.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Mapping
from http import HTTPStatus
from inspect import iscoroutinefunction
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import (
    BadRequest,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import NoReverseMatch
from django.utils.decorators import sync_and_async_middleware
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import NotFound
from rest_framework.exceptions import ValidationError as DRFValidationError
from rest_framework.pagination import CursorPagination, PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from .exceptions import PortalError, ValidationFailed, error_body
from .login_guard import lockout_response
from .net import request_client_ip


def _first_message(errors: Any) -> str:
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
        status, refusal = _bad_request_body(exc)
        return Response(refusal, status=status)
    if isinstance(exc, PortalError):
        request = context.get("request")
        status, body, headers = error_body(exc, user=getattr(request, "user", None))
        return Response(body, status=status, headers=headers or None)
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

    def get_ident(self, request: Request) -> str:
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
    json_response = JsonResponse({"code": code, "detail": detail}, status=status)
    # Django logged the error it answered (with its traceback) and marked that response: keep the mark, or
    # the handler logs the same error again for this new response (a second line, without the traceback).
    if getattr(response, "_has_been_logged", False):
        json_response._has_been_logged = True  # type: ignore[attr-defined]
    return json_response


@sync_and_async_middleware
def api_json_errors_middleware(get_response: Callable) -> Callable:
    """Middleware: every error under /api/ is JSON in every mode (DEBUG's HTML pages included)."""
    if iscoroutinefunction(get_response):
        async def async_middleware(request: HttpRequest) -> HttpResponse:
            return _api_error_as_json(request, await get_response(request))

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponse:
        return _api_error_as_json(request, get_response(request))

    return middleware


# --- row URLs: one reverse() per route and response, not one per row (issue #13) --------------------

_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _sentinel(kind: str, index: int) -> str:
    """A value of `kind` that no real id or host name contains, distinct per keyword (none is inside another)."""
    if kind == "int":
        return f"98765432101234{index}"
    return f"f0e1d2c3-b4a5-4697-8887-76655443322{index}"


def _kind(value: object) -> str | None:
    """"int" for ids (digits), "uuid" for canonical UUIDs; None: anything else (reversed row by row)."""
    if isinstance(value, uuid.UUID):
        return "uuid"
    text = str(value)
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return "int"
    return "uuid" if _UUID_TEXT.fullmatch(text) else None


_INT_IDS = 10**18  # integer ids below this are "int" for _kind (at most 18 digits)


def row_url(context: Mapping[str, Any], viewname: str, **kwargs: object) -> str:
    """`rest_framework.reverse.reverse(viewname, kwargs=kwargs, request=context["request"])`, the same string,
    at the cost of a string replacement: the route is reversed (and made absolute) once per serializer
    context with stand-in values, then each row's ids are put in their place. Ids that are not digits or
    UUIDs are reversed as usual. Raises NoReverseMatch where reverse() would."""
    # The common case first (integer ids, a route already reversed for this context): one dict lookup.
    by_names = context.get("_row_urls_int")
    if by_names is not None:
        entry = by_names.get((viewname, *kwargs))
        if entry is not None and all(type(v) is int and 0 <= v < _INT_IDS for v in kwargs.values()):  # noqa: E721
            url, stand_ins = entry
            for name, stand_in in stand_ins.items():
                url = url.replace(stand_in, str(kwargs[name]))
            return url
    kinds = tuple((name, _kind(value)) for name, value in sorted(kwargs.items()))
    request = context.get("request")
    if any(kind is None for _, kind in kinds):
        return reverse(viewname, kwargs=kwargs, request=request)
    cache = context.get("_row_urls")
    if cache is None:
        cache = {}
        if isinstance(context, dict):  # a serializer's context: one per response
            context["_row_urls"] = cache
    key = (viewname, kinds)
    if key not in cache:
        stand_ins = {name: _sentinel(kind or "", i) for i, (name, kind) in enumerate(kinds)}
        try:
            cache[key] = (reverse(viewname, kwargs=stand_ins, request=request), stand_ins)
        except NoReverseMatch:
            cache[key] = None
    entry = cache[key]
    if entry is None:
        raise NoReverseMatch(f"Reverse for {viewname!r} with keyword arguments {sorted(kwargs)} not found.")
    if isinstance(context, dict) and all(kind == "int" for _, kind in kinds):
        context.setdefault("_row_urls_int", {})[(viewname, *kwargs)] = entry
    url, stand_ins = entry
    for name, stand_in in stand_ins.items():
        url = url.replace(stand_in, str(kwargs[name]))
    return url


class _Cursor(CursorPagination):
    """DRF's cursor pagination that refuses a forged position like any bad cursor (404 "Invalid cursor").

    A cursor is the client's text: its position must be a value of the first ordering field (a time on the
    job list) and free of NUL (PostgreSQL refuses it in text), or the query would fail with a 500."""

    _model: Any = None

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> list | None:
        self._model = queryset.model
        return super().paginate_queryset(queryset, request, view)

    def decode_cursor(self, request: Request) -> Any:
        cursor = super().decode_cursor(request)
        if cursor is None or cursor.position is None:
            return cursor
        position = str(cursor.position)
        try:
            if "\x00" in position:
                raise ValueError("NUL in the position")
            self._model._meta.get_field(self.ordering[0].lstrip("-")).to_python(position)
        except (ValueError, DjangoValidationError) as exc:
            raise NotFound(self.invalid_cursor_message) from exc
        return cursor


class Pagination(PageNumberPagination):
    """`?page=N`, and `?page_size=` up to 200 (default 50 from settings).

    On lists whose view names an order for it (`view.get_cursor_ordering()`: the VM and job lists),
    `?pagination=cursor` (or a `?cursor=` from a previous page) switches to DRF's cursor pagination: no
    `count`, `next`/`previous` links that hold a position, a constant cost however deep the page (issue #13).
    Page numbers stay the default."""

    page_size_query_param = "page_size"
    max_page_size = 200
    MODES = ("page", "cursor")
    _cursor: CursorPagination | None = None

    def _cursor_for(self, request: Request, view: Any) -> CursorPagination | None:
        mode = request.query_params.get("pagination", "")
        if mode and mode not in self.MODES:
            raise ValidationFailed(f"pagination: one of {', '.join(self.MODES)} (got {mode[:20]!r}).",
                                   field="pagination")
        ordering = view.get_cursor_ordering() if hasattr(view, "get_cursor_ordering") else None
        wanted = mode == "cursor" or (not mode and "cursor" in request.query_params)
        if not wanted:
            return None
        if not ordering:
            raise ValidationFailed("pagination: this list has page numbers only.", field="pagination")
        cursor = _Cursor()
        cursor.ordering = tuple(ordering)
        cursor.page_size = self.page_size
        cursor.page_size_query_param = self.page_size_query_param
        cursor.max_page_size = self.max_page_size
        return cursor

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> list | None:
        self._cursor = self._cursor_for(request, view)
        if self._cursor is not None:
            return self._cursor.paginate_queryset(queryset, request, view)
        return super().paginate_queryset(queryset, request, view)

    def get_paginated_response(self, data: Any) -> Response:
        if self._cursor is not None:
            return self._cursor.get_paginated_response(data)
        return super().get_paginated_response(data)

    def get_schema_operation_parameters(self, view: Any) -> list[dict]:
        params = super().get_schema_operation_parameters(view)
        if getattr(view, "action", None) == "list" and hasattr(view, "get_cursor_ordering"):
            params += [
                {"name": "pagination", "required": False, "in": "query",
                 "description": "`cursor`: cursor pagination (no count; follow `next`); default `page`.",
                 "schema": {"type": "string", "enum": list(self.MODES)}},
                {"name": "cursor", "required": False, "in": "query",
                 "description": "The position a cursor page's `next` or `previous` link holds.",
                 "schema": {"type": "string"}},
            ]
        return params


# --- documented error bodies (used in extend_schema responses) -----------------------------------

class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable machine-readable code, e.g. not_found, invalid_state.")
    detail = serializers.CharField(help_text="Human-readable message.")


class ValidationErrorSerializer(ErrorSerializer):
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()),  # type: ignore[assignment]
                                   help_text="Field name -> messages.")  # (a field named like Serializer.errors)


class QuotaErrorSerializer(ErrorSerializer):
    resource = serializers.CharField()
    requested = serializers.IntegerField()
    limit = serializers.IntegerField()
    in_use = serializers.IntegerField()


NOT_FOUND = OpenApiResponse(ErrorSerializer, description="Not found, or not yours.")
INVALID = OpenApiResponse(ValidationErrorSerializer, description="Invalid input; `errors` maps fields to messages.")
NAME_OR_ID = OpenApiParameter("id", OpenApiTypes.STR, OpenApiParameter.PATH, description="Name or numeric id.")


class CatalogViewSet(viewsets.GenericViewSet):
    """Read-only list and lookup by name or numeric id (images, flavors, hosts).

    Subclasses say what the requesting user may see (`visible`) and how one is found (`find`, which
    raises NotFound); the serializer renders both.
    """

    pagination_class = Pagination
    filter_backends: list = []
    lookup_value_regex = "[^/]+"

    def visible(self, request: Request) -> QuerySet:
        raise NotImplementedError

    def find(self, request: Request, key: str) -> Any:
        raise NotImplementedError

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.visible(request))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(parameters=[NAME_OR_ID], responses={404: NOT_FOUND})
    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        return Response(self.get_serializer(self.find(request, str(pk))).data)


class TokenSerializer(AuthTokenSerializer):
    """DRF's, refusing a username longer than any account's before it is looked up (axes records the
    username of a failed try in a 255-character column: a longer one answered 500)."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        username_field = get_user_model()._meta.get_field(get_user_model().USERNAME_FIELD)
        if len(attrs.get("username") or "") > (getattr(username_field, "max_length", None) or 150):
            raise serializers.ValidationError("Unable to log in with provided credentials.", code="authorization")
        return super().validate(attrs)


class TokenView(ObtainAuthToken):
    """Trade a username and password for an API token (`Authorization: Token …`).

    Throttled per client address (`PORTAL_API_TOKEN_RATE`, 10 a minute by default): password guessing
    gets 429 with the seconds to wait. The address is the peer's, or behind `PORTAL_TRUSTED_PROXIES`
    proxies the one they forwarded (portal.net), so a made-up X-Forwarded-For does not reset it.
    """

    throttle_classes = [ClientScopedRateThrottle]
    throttle_scope = "token"
    serializer_class = TokenSerializer
    # ObtainAuthToken names DRF's own parsers; use the portal's (a too-deep JSON body is a 400).
    parser_classes = APIView.parser_classes

    def post(self, request, *args, **kwargs):
        """Failed tries count towards the web login's lockout (portal.login_guard), and a username locked
        out for this address gets no token: 429 `locked_out`, even with the right password."""
        try:
            response = super().post(request, *args, **kwargs)
        except DRFValidationError:
            if getattr(request, "axes_locked_out", False):  # set by axes on DRF's request, not Django's
                return lockout_response(request._request)
            raise
        return response
