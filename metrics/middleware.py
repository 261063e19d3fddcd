"""How long the portal takes to answer: `vmportal_http_request_duration_seconds`, a histogram by view,
method and status class, observed by a middleware (sync and async, like every middleware here).

Under gunicorn each worker is its own process: prometheus_client's multiprocess mode keeps each worker's
values in files under PROMETHEUS_MULTIPROC_DIR (portal.gunicorn_conf makes and wipes that directory), and
/metrics sums them, so a scrape served by any worker reports every worker's requests.

Labels stay few: `view` is the URL pattern's name (`api-vm-list`, `vms:list`, ...) or `unmatched`
(static files, unknown URLs), the method one of the HTTP methods or `other`, the status its class (2xx).
The time is to the response object (a streamed body's transfer is not in it); websockets are not HTTP
requests here and are not counted.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from inspect import iscoroutinefunction
from typing import Any

from asgiref.sync import markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase
from prometheus_client import Histogram

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# registry=None: metrics.collector.exposition_registry() decides where it is read from (this process, or
# every worker's files in multiprocess mode).
REQUEST_DURATION = Histogram(
    "vmportal_http_request_duration_seconds",
    "Time from a request reaching the portal's middleware to its response, by view, method and status class.",
    ["view", "method", "status_class"], buckets=BUCKETS, registry=None)


def _labels(request: HttpRequest, response: HttpResponseBase) -> tuple[str, str, str]:
    match = getattr(request, "resolver_match", None)
    view = match.view_name if match is not None and match.view_name else "unmatched"
    method = request.method if request.method in METHODS else "other"
    return view, method or "other", f"{response.status_code // 100}xx"


class RequestDurationMiddleware:
    """Observes each request's duration in REQUEST_DURATION."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        started = time.perf_counter()
        response = self.get_response(request)
        self._observe(request, response, started)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        response = await get_response(request)
        self._observe(request, response, started)
        return response

    @staticmethod
    def _observe(request: HttpRequest, response: HttpResponseBase, started: float) -> None:
        REQUEST_DURATION.labels(*_labels(request, response)).observe(time.perf_counter() - started)
