"""Domain errors with stable codes; every adapter maps them to its medium exactly once.

`user_message(exc, user=...)` is the one sentence a person reads for an error, whatever the door
(web, API, Slack, websocket, job records): plain words for everyone, the hypervisor's own text
(`detail`) for administrators only, and never a libvirt URI or socket path for anyone else.
Each class also says how the doors present it: `code` (API, Slack), `http_status` (API, web) and
`exit_code` (the `manage.py vm` command line; the table is in README.md, "Command line").
"""

from __future__ import annotations

import re
from typing import Any


class PortalError(Exception):
    """Base of every expected error: a stable `code`, a human `message`, structured `fields`.

    `detail` is for administrators only (the hypervisor's own words, URIs, paths); it is never
    shown to ordinary users and never part of `as_dict`.
    """

    code = "error"
    http_status = 400
    exit_code = 1  # CLI: any other failure (also a job that failed)

    def __init__(self, message: str, *, detail: str = "", **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.fields = fields

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "detail": self.message, **self.fields}


class ValidationFailed(PortalError):
    """Input is malformed; `errors` maps field name to a list of messages."""

    code = "invalid"
    http_status = 400
    exit_code = 2  # CLI: usage or invalid input

    def __init__(self, errors: dict[str, list[str]] | str, field: str = "__all__") -> None:
        if isinstance(errors, str):
            errors = {field: [errors]}
        self.errors = errors
        first = next(iter(errors.values()))[0]
        super().__init__(first, errors=errors)


class NotFound(PortalError):
    code = "not_found"
    http_status = 404
    exit_code = 3


class PermissionDenied(PortalError):
    code = "forbidden"
    http_status = 403
    exit_code = 4


class InvalidState(PortalError):
    """The action does not fit the object's current state (e.g. stop a stopped VM)."""

    code = "invalid_state"
    http_status = 409
    exit_code = 5


class Gone(InvalidState):
    """A one-time thing (a link, a token) that was used or has expired: it will not work again."""

    code = "gone"
    http_status = 410


class Conflict(PortalError):
    code = "conflict"
    http_status = 409
    exit_code = 5


class IdempotencyKeyReused(Conflict):
    """An idempotency key sent again with different parameters (a retry must repeat its request exactly)."""

    code = "idempotency_key_reused"
    http_status = 422


class QuotaExceeded(PortalError):
    code = "quota_exceeded"
    http_status = 403
    exit_code = 6

    def __init__(self, *, resource: str, requested: int, limit: int, in_use: int, unit: str = "",
                 requested_resources: dict[str, int] | None = None, group_id: int | None = None) -> None:
        unit_s = f" {unit}" if unit else ""
        message = (
            f"Quota exceeded for {resource}: requested {requested}{unit_s}, "
            f"{in_use}{unit_s} of {limit}{unit_s} in use"
        )
        super().__init__(message, resource=resource, requested=requested, limit=limit, in_use=in_use)
        self.resource = resource
        # The whole request that did not fit (vms, vcpus, memory_mib, disk_gib) and whose quota it was
        # charged to (a group's, or the user's when None): a door can offer to ask for just that much.
        # Attributes, not `fields`, so API bodies stay as they were.
        self.requested_resources = dict(requested_resources or {})
        self.group_id = group_id


class HypervisorError(PortalError):
    """Something went wrong on the hypervisor side.

    The gateway (portal.hypervisor) makes these with a plain-words `message` for users and the
    libvirt text in `detail` for administrators. One made without a `detail` is treated as raw
    hypervisor text: ordinary users get the class's `plain` sentence instead of its message.
    """

    code = "hypervisor_error"
    http_status = 502
    plain = ("The hypervisor could not do this. Try again; if it keeps failing, "
             "an administrator can see the details in the job log.")
    transient = False
    exit_code = 7

    def __init__(self, message: str = "", *, detail: str = "", **fields: Any) -> None:
        super().__init__(message or self.plain, detail=detail, **fields)


class HypervisorUnavailable(HypervisorError):
    code = "hypervisor_unavailable"
    http_status = 503
    plain = "The VM's host cannot be reached right now. Try again in a minute."


class HypervisorBusy(HypervisorError):
    """The host is busy with this domain (libvirt's state change lock): worth retrying shortly."""

    code = "hypervisor_busy"
    http_status = 503
    plain = "The host was busy with this VM; try again in a minute."
    transient = True


class DomainNotFound(HypervisorError, NotFound):
    code = "domain_not_found"
    http_status = 404
    plain = "The hypervisor no longer knows this VM. An administrator has been told about the drift."
    exit_code = 3


class HypervisorInvalidState(HypervisorError, InvalidState):
    code = "invalid_state"
    http_status = 409
    plain = "The VM's current state on the host does not allow this right now."
    exit_code = 5


class OperationFailed(HypervisorError):
    code = "operation_failed"
    http_status = 502


class Unsupported(HypervisorError):
    code = "unsupported"
    http_status = 501
    plain = "The VM's host does not support this."


# --- one wording per audience ----------------------------------------------------------------------

# Host internals that must never reach ordinary users: libvirt URIs and libvirt socket paths.
_INTERNALS = re.compile(r"qemu(\+\w+)?://\S*|test:///\S*|/\S*libvirt\S*sock\S*")


def scrub(text: str) -> str:
    """`text` with libvirt URIs and socket paths replaced by "the host" (the last line of defence)."""
    return _INTERNALS.sub("the host", text)


def is_staff(user: Any) -> bool:
    """Whether `user` is an active administrator (who may read the hypervisor's own words).

    The one staff check: portal.actors.is_admin is this, for code that speaks in actors.
    """
    return bool(user is not None and getattr(user, "is_authenticated", False)
                and getattr(user, "is_active", False) and getattr(user, "is_staff", False))


def admin_message(exc: PortalError) -> str:
    """The sentence for administrators: the plain message and, when there is one, the detail."""
    if exc.detail and exc.detail not in exc.message:
        return f"{exc.message} ({exc.detail})"
    return exc.message


def admin_detail(exc: PortalError, *, shown: str = "") -> str:
    """What administrators should see beyond `shown` (the user's sentence): detail or raw message."""
    if exc.detail:
        return exc.detail
    return exc.message if exc.message != shown else ""


def user_message(exc: PortalError, *, user: Any = None) -> str:
    """The sentence a person reads for `exc` on any door; without `user`, the ordinary users' one.

    Administrators get the hypervisor's own words too; everyone else gets plain words, scrubbed of
    libvirt URIs and socket paths even when a message came straight from libvirt.
    """
    if isinstance(exc, QuotaExceeded):
        text = f"{exc.message}. Delete or shrink a VM, or ask an administrator for a larger quota."
    elif isinstance(exc, ValidationFailed):
        text = " ".join(m for msgs in exc.errors.values() for m in msgs)
    elif is_staff(user):
        return admin_message(exc)
    elif isinstance(exc, HypervisorError) and not exc.detail:
        text = exc.plain  # made outside the gateway's classification: its message may be libvirt's
    else:
        text = exc.message
    return text if is_staff(user) else scrub(text)


def error_body(exc: PortalError, *, user: Any = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The JSON answer to `exc` for every JSON door (the REST API, the pages' JSON endpoints): status,
    body and headers. `detail` is the sentence for `user` (plain words; staff also get `admin_detail`),
    plus the error's fields; a refusal that says when to come back has a Retry-After header."""
    if isinstance(exc, ValidationFailed):
        return exc.http_status, {"code": exc.code, "detail": exc.message, "errors": exc.errors}, {}
    if isinstance(exc, QuotaExceeded):  # the numbers are in the fields; the sentence says them too
        return exc.http_status, exc.as_dict(), {}
    shown = user_message(exc)  # the plain words, for staff too
    body: dict[str, Any] = {"code": exc.code, "detail": shown}
    body.update({k: v for k, v in exc.fields.items() if k != "libvirt_code"})
    extra = admin_detail(exc, shown=shown)
    if is_staff(user) and extra:
        body["admin_detail"] = extra
    headers = {"Retry-After": str(exc.fields["retry_after"])} if exc.fields.get("retry_after") else {}
    status = exc.http_status if 400 <= exc.http_status < 600 else 400
    return status, body, headers
