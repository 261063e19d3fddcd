"""Domain errors with stable codes; every adapter maps them to its medium exactly once."""

from __future__ import annotations

from typing import Any


class PortalError(Exception):
    """Base of every expected error: a stable `code`, a human `message`, structured `fields`."""

    code = "error"
    http_status = 400

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

    def __init__(self, errors: dict[str, list[str]] | str, field: str = "__all__") -> None:
        if isinstance(errors, str):
            errors = {field: [errors]}
        self.errors = errors
        first = next(iter(errors.values()))[0]
        super().__init__(first, errors=errors)


class NotFound(PortalError):
    code = "not_found"
    http_status = 404


class PermissionDenied(PortalError):
    code = "forbidden"
    http_status = 403


class InvalidState(PortalError):
    """The action does not fit the object's current state (e.g. stop a stopped VM)."""

    code = "invalid_state"
    http_status = 409


class Conflict(PortalError):
    code = "conflict"
    http_status = 409


class QuotaExceeded(PortalError):
    code = "quota_exceeded"
    http_status = 403

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
    """Something went wrong on the hypervisor side."""

    code = "hypervisor_error"
    http_status = 502


class HypervisorUnavailable(HypervisorError):
    code = "hypervisor_unavailable"
    http_status = 503


class DomainNotFound(HypervisorError, NotFound):
    code = "domain_not_found"
    http_status = 404


class HypervisorInvalidState(HypervisorError, InvalidState):
    code = "invalid_state"
    http_status = 409


class OperationFailed(HypervisorError):
    code = "operation_failed"
    http_status = 502


class Unsupported(HypervisorError):
    code = "unsupported"
    http_status = 501
