"""Calls to Slack held back until Slack has its acknowledgement.

Slack wants every request answered within 3 seconds, and a slow Web API must never delay that
answer. While a Slack request is being answered (inside `holding()`), `defer()` only queues a call
to Slack (a post, an update, a response_url reply, a notification caused by the request). The
queue runs in order, in a background thread, once the HTTP response has gone out: `send_after()`
hooks it on the response's `close()`, which Django's WSGI and ASGI handlers (and its test client)
call after the last byte. In Socket Mode there is no HTTP response: the listener calls `release()`
right after its `ack()`. Outside a Slack request (the job worker, web pages) `defer()` runs the call
at once, as before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from django.db import connections
from django.http import HttpResponseBase

log = logging.getLogger(__name__)

SlackCall = Callable[[], object]


@dataclass
class Held:
    """The Slack calls of one request, in the order they were made."""

    calls: list[SlackCall] = field(default_factory=list)
    outer: bool = False  # an enclosing holding() block owns these calls and sends them


_held: ContextVar[Held | None] = ContextVar("chatops_outbox", default=None)
_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="slack-outbox")
_pending: set[Future] = set()
_lock = threading.Lock()


def defer(call: SlackCall) -> None:
    """Call Slack after the acknowledgement when answering Slack, else now (errors are logged)."""
    held = _held.get()
    if held is None:
        _run_one(call)
    else:
        held.calls.append(call)


@contextmanager
def holding() -> Iterator[Held]:
    """Queue the Slack calls made inside (nested blocks share the outermost queue)."""
    outer = _held.get()
    if outer is not None:
        yield Held(calls=outer.calls, outer=True)
        return
    held = Held()
    token = _held.set(held)
    try:
        yield held
    finally:
        _held.reset(token)


def release(held: Held) -> Future | None:
    """Run the queued calls in a background thread (not when an enclosing block owns them)."""
    if held.outer or not held.calls:
        return None
    calls, held.calls = list(held.calls), []
    future = _executor.submit(_run_all, calls)
    with _lock:
        _pending.add(future)
    future.add_done_callback(_forget)
    return future


def send_after[Response: HttpResponseBase](response: Response, held: Held) -> Response:
    """Release `held` once `response` has been sent (when the server closes it)."""
    if held.outer or not held.calls:
        return response
    close = response.close

    def close_then_release() -> None:
        try:
            close()
        finally:
            release(held)

    # Servers call close() on the response object after sending it; Django offers no public
    # per-response hook for "sent", so the instance's close is wrapped.
    response.close = close_then_release  # type: ignore[method-assign]
    return response


def wait(timeout: float = 30.0) -> bool:
    """Block until every released queue has run (tests, a clean shutdown); False on timeout."""
    with _lock:
        pending = list(_pending)
    if not pending:
        return True
    _done, not_done = wait_for(pending, timeout=timeout)
    return not not_done


def _forget(future: Future) -> None:
    with _lock:
        _pending.discard(future)


def _run_one(call: SlackCall) -> None:
    try:
        call()
    except Exception:  # posting to Slack is best effort: never let it break the caller
        log.exception("a deferred Slack call failed")


def _run_all(calls: list[SlackCall]) -> None:
    try:
        for call in calls:
            _run_one(call)
    finally:
        connections.close_all()  # this pool thread's own database connections
