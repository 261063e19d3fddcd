"""Console refusals, with stable codes; `close_for` is the one table of websocket close codes.

Both relays (the Channels consumers and the websockify proxy) close with these codes, and the pages
turn them into a status line, so "expired" always reads the same whichever door the bytes took.
"""

from __future__ import annotations

from portal.exceptions import (
    HypervisorError,
    InvalidState,
    NotFound,
    PermissionDenied,
    PortalError,
    user_message,
)


class ConsoleRefused(PortalError):
    """A console connection that must not go ahead."""

    code = "console_refused"
    http_status = 403


class TicketMissing(ConsoleRefused):
    code = "ticket_missing"
    http_status = 401


class TicketUnknown(ConsoleRefused):
    code = "ticket_unknown"
    http_status = 401


class TicketExpired(ConsoleRefused):
    code = "ticket_expired"
    http_status = 401


class TicketUsed(ConsoleRefused):
    code = "ticket_used"
    http_status = 409


class ConsoleForbidden(ConsoleRefused, PermissionDenied):
    """The user may not (or may no longer) use this console: revoked, signed out, other VM, bad Origin."""

    code = "console_forbidden"
    http_status = 403


class ConsoleVMNotRunning(ConsoleRefused, InvalidState):
    code = "vm_not_running"
    http_status = 409


class ConsoleBusy(ConsoleRefused):
    """Someone else has the VM's serial console and the owner does not allow watchers."""

    code = "console_busy"
    http_status = 409


class ConsoleUnavailable(ConsoleRefused):
    """This VM's host offers no such console (libvirt's test driver, for instance)."""

    code = "console_unavailable"
    http_status = 409


class ConsoleRateLimited(ConsoleRefused):
    """Too many console tickets (or one-time links) asked for in a short time; `retry_after` in seconds."""

    code = "console_rate_limited"
    http_status = 429


class ConsoleSessionLimit(ConsoleRefused):
    """The user already has PORTAL_CONSOLE_MAX_SESSIONS_PER_USER consoles open."""

    code = "console_session_limit"
    http_status = 429


class BadFrame(ConsoleRefused):
    """The browser sent something that is not part of the console protocol."""

    code = "bad_frame"
    http_status = 400


class SessionEnded(ConsoleRefused):
    """A normal end seen by the relay (the controlling serial session left, the guest closed VNC)."""

    code = "session_ended"
    http_status = 410


# One table: domain error code -> websocket close code (4000-4999 are for applications).
CLOSE_CODES: dict[str, int] = {
    BadFrame.code: 4400,
    TicketMissing.code: 4401,
    TicketUnknown.code: 4401,
    ConsoleForbidden.code: 4403,
    "forbidden": 4403,  # portal.exceptions.PermissionDenied
    "not_found": 4403,  # someone else's VM is indistinguishable from a missing one
    "domain_not_found": 4410,
    TicketExpired.code: 4408,
    TicketUsed.code: 4409,
    ConsoleVMNotRunning.code: 4410,
    "invalid_state": 4410,
    SessionEnded.code: 4000,
    ConsoleBusy.code: 4423,
    ConsoleSessionLimit.code: 4429,  # too many consoles open: close one (the page does not retry by itself)
    ConsoleRateLimited.code: 4429,
    ConsoleUnavailable.code: 4502,
    "vnc_handshake_failed": 4502,  # consoles.rfb.HandshakeFailed: the VM's display refused or is gone
}
HYPERVISOR_CLOSE_CODE = 4502
INTERNAL_CLOSE_CODE = 1011


def _fit(reason: str) -> str:
    """Close reasons travel in a control frame: at most 123 bytes of UTF-8."""
    data = reason.encode("utf-8")
    if len(data) <= 123:
        return reason
    return data[:120].decode("utf-8", "ignore") + "..."


def close_for(exc: BaseException) -> tuple[int, str]:
    """The websocket close code and reason for a refusal or failure (never a traceback)."""
    if isinstance(exc, PortalError):
        if exc.code in CLOSE_CODES:
            return CLOSE_CODES[exc.code], _fit(user_message(exc))
        if isinstance(exc, HypervisorError):
            return HYPERVISOR_CLOSE_CODE, _fit("The console is unavailable: the hypervisor did not answer.")
        if isinstance(exc, NotFound):
            return 4403, _fit(user_message(exc))
        return 4403, _fit(user_message(exc))
    return INTERNAL_CLOSE_CODE, "Internal error in the console relay."
