"""Probes for load balancers and supervisors: `/healthz` (alive) and `/readyz` (able to serve).

`/healthz` answers 200 as long as the process runs: no database, no session, no other service.
`/readyz` answers 200 when every readiness check passes and 503 otherwise, with a JSON body naming
what is not ready. The core checks the database and the channel layer; apps add theirs with
`register_readiness_check` (cluster: the enabled hypervisor hosts, from the database as the monitor
last saw them — never a live libvirt call per probe). Anyone sees each check's one-word summary;
only a signed-in staff user also sees the details (host names, error texts).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

log = logging.getLogger(__name__)

CHANNEL_LAYER_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class Readiness:
    """One check's outcome: `summary` is safe for anyone, `detail` only for staff."""

    ready: bool
    summary: str
    detail: Any = None


_checks: dict[str, Callable[[], Readiness]] = {}


def register_readiness_check(name: str, check: Callable[[], Readiness]) -> None:
    """Add a check to /readyz (apps call this in AppConfig.ready(); a check must not raise, but may)."""
    _checks[name] = check


def database_ready() -> Readiness:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any failure means "not ready"; the words are for staff only
        return Readiness(False, "unreachable", f"{exc.__class__.__name__}: {exc}")
    return Readiness(True, "ok")


def channel_layer_ready() -> Readiness:
    layer = get_channel_layer()
    if layer is None:
        return Readiness(False, "not configured")

    async def ping() -> None:
        await asyncio.wait_for(layer.group_send("portal.readyz", {"type": "readyz.ping"}),
                               CHANNEL_LAYER_TIMEOUT_SECONDS)

    try:
        async_to_sync(ping)()
    except Exception as exc:  # Redis down, refused or slow: not ready
        return Readiness(False, "unreachable", f"{exc.__class__.__name__}: {exc}")
    return Readiness(True, "ok", layer.__class__.__name__)


def _run(name: str, check: Callable[[], Readiness]) -> Readiness:
    try:
        return check()
    except Exception as exc:
        log.warning("readiness check %s raised: %s", name, exc)
        return Readiness(False, "check failed", f"{exc.__class__.__name__}: {exc}")


def _is_staff(request: HttpRequest) -> bool:
    try:
        user = request.user
        return bool(user.is_authenticated and user.is_staff)
    except Exception:  # no database: the session cannot be read; treat as anonymous
        return False


@never_cache
@require_GET
def healthz_view(request: HttpRequest) -> JsonResponse:
    """Alive: the process answers (nothing else is touched)."""
    return JsonResponse({"status": "alive"})


@never_cache
@require_GET
def readyz_view(request: HttpRequest) -> JsonResponse:
    """Ready: the database, the channel layer and every registered check; 503 naming what is not."""
    results = {"database": _run("database", database_ready)}
    # The other checks read the database; without it they would only repeat its failure.
    if results["database"].ready:
        results["channel_layer"] = _run("channel_layer", channel_layer_ready)
        for name, check in list(_checks.items()):
            results[name] = _run(name, check)
    else:
        results["channel_layer"] = _run("channel_layer", channel_layer_ready)
    staff = results["database"].ready and _is_staff(request)
    not_ready = [name for name, result in results.items() if not result.ready]
    body: dict[str, Any] = {
        "status": "not ready" if not_ready else "ready",
        "not_ready": not_ready,
        "checks": {name: {"ready": result.ready, "summary": result.summary,
                          **({"detail": result.detail} if staff and result.detail is not None else {})}
                   for name, result in results.items()},
    }
    return JsonResponse(body, status=503 if not_ready else 200)
