"""`/metrics`: the Prometheus exposition, for a scraper holding the metrics token (or a staff API token).

- PORTAL_METRICS_TOKEN unset: 404, as if the URL did not exist (metrics are off, never public by accident).
- No `Authorization` header: 401 with `WWW-Authenticate: Bearer`; a token that is neither the metrics
  token nor a staff user's API token: 403.
- `Authorization: Bearer <PORTAL_METRICS_TOKEN>` (compared in constant time), or a staff user's API token
  as `Token <key>` or `Bearer <key>`: 200, text format 0.0.4 (OpenMetrics when the scraper asks for it).
"""

from __future__ import annotations

import hmac
import re

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client.exposition import choose_encoder
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from .collector import exposition_registry

_API_KEY = re.compile(r"[0-9A-Za-z]{20,64}")


def _credentials(request: HttpRequest) -> tuple[str, str] | None:
    """(scheme in lower case, credential) from the Authorization header, or None without one."""
    scheme, _, credential = request.headers.get("Authorization", "").strip().partition(" ")
    credential = credential.strip()
    if not scheme or not credential:
        return None
    return scheme.lower(), credential


def _is_metrics_token(credential: str) -> bool:
    return hmac.compare_digest(credential.encode(), str(settings.METRICS_TOKEN).encode())


def _is_staff_api_token(credential: str) -> bool:
    """A staff user's DRF API token (DRF's own lookup: an inactive user's token is refused). Only what could
    be a key (DRF's are 40 hex digits) is looked up: no query for anything else."""
    if not _API_KEY.fullmatch(credential):
        return False
    try:
        user, _ = TokenAuthentication().authenticate_credentials(credential)
    except AuthenticationFailed:
        return False
    return bool(user.is_staff)


def _refusal(status: int, text: str) -> HttpResponse:
    response = HttpResponse(text + "\n", status=status, content_type="text/plain; charset=utf-8")
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not settings.METRICS_TOKEN:
        raise Http404("Metrics are off (PORTAL_METRICS_TOKEN is not set).")
    found = _credentials(request)
    if found is None:
        return _refusal(401, "A metrics token is required: Authorization: Bearer <token>.")
    scheme, credential = found
    allowed = ((scheme == "bearer" and _is_metrics_token(credential))
               or (scheme in {"bearer", "token"} and _is_staff_api_token(credential)))
    if not allowed:
        return _refusal(403, "This token may not read the metrics.")
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(exposition_registry()), content_type=content_type)
