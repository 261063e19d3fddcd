"""Domain errors with stable codes; every adapter maps them to its medium exactly once.

Each class says how the doors present it: `code` (API, Slack), `http_status` (API, web) and
`exit_code` (the `manage.py vm` command line; the table is in README.md, "Command line").
"""

from __future__ import annotations

from typing import Any


class PortalError(Exception):
    """Base of every expected error: a stable `code`, a human `message`, structured `fields`."""

    code = "error"
    http_status = 400
    exit_code = 1  # CLI: any other failure (also a job that failed)

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
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


class Conflict(PortalError):
    code = "conflict"
    http_status = 409
    exit_code = 5


class QuotaExceeded(PortalError):
    code = "quota_exceeded"
    http_status = 403
    exit_code = 6

    def __init__(self, *, resource: str, requested: int, limit: int, in_use: int, unit: str = "") -> None:
        unit_s = f" {unit}" if unit else ""
        message = (
            f"Quota exceeded for {resource}: requested {requested}{unit_s}, "
            f"{in_use}{unit_s} of {limit}{unit_s} in use"
        )
        super().__init__(message, resource=resource, requested=requested, limit=limit, in_use=in_use)
        self.resource = resource


class HypervisorError(PortalError):
    """Something went wrong on the hypervisor side."""

    code = "hypervisor_error"
    http_status = 502
    exit_code = 7


class HypervisorUnavailable(HypervisorError):
    code = "hypervisor_unavailable"
    http_status = 503


class DomainNotFound(HypervisorError, NotFound):
    code = "domain_not_found"
    http_status = 404
    exit_code = 3


class HypervisorInvalidState(HypervisorError, InvalidState):
    code = "invalid_state"
    http_status = 409
    exit_code = 5


class OperationFailed(HypervisorError):
    code = "operation_failed"
    http_status = 502


class Unsupported(HypervisorError):
    code = "unsupported"
    http_status = 501
