"""libvirtError -> portal exceptions, classified by libvirt's error code at the gateway boundary.

Every error made here carries plain words for users in `message` and libvirt's own text (with what
was being done) in `detail`, for administrators only.
"""

from __future__ import annotations

import libvirt

from portal.exceptions import (
    DomainNotFound,
    HypervisorBusy,
    HypervisorError,
    HypervisorInvalidState,
    HypervisorUnavailable,
    OperationFailed,
    Unsupported,
)

_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN: DomainNotFound.plain,
    libvirt.VIR_ERR_NO_STORAGE_POOL: "A storage pool of this VM is missing on its host.",
    libvirt.VIR_ERR_NO_STORAGE_VOL: "A disk of this VM is missing on its host.",
    libvirt.VIR_ERR_NO_NETWORK: "A network of this VM is missing on its host.",
    libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT: "The snapshot is missing on the VM's host.",
}
_INVALID_STATE = {libvirt.VIR_ERR_OPERATION_INVALID}
_UNSUPPORTED = {libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED}
_CONNECTION = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_ERR_RPC,
               libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_AUTH_UNAVAILABLE}
# The domain is busy with another operation: libvirt gave up waiting for its per-domain job lock
# ("Timed out during operation: cannot acquire state change lock (held by monitor=...)"); the same
# words also come as operation-invalid/-failed or internal errors (e.g. the max_queued limit).
_BUSY = {libvirt.VIR_ERR_OPERATION_TIMEOUT}
_BUSY_IF_SAYS = {libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_OPERATION_FAILED,
                 libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_ERR_SYSTEM_ERROR}
_BUSY_WORDS = ("state change lock",)


def is_connection_error(exc: libvirt.libvirtError) -> bool:
    code = exc.get_error_code()
    if code in _CONNECTION:
        return True
    message = (exc.get_error_message() or "").lower()
    return code in {libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_INTERNAL_ERROR} and (
        "socket" in message or "connection" in message or "end of file" in message
        or "broken pipe" in message  # "Cannot write data: Broken pipe": the daemon died under us
    )


def is_busy_error(exc: libvirt.libvirtError) -> bool:
    """Whether libvirt refused because the domain is busy with another operation (transient)."""
    code = exc.get_error_code()
    if code in _BUSY:
        return True
    message = (exc.get_error_message() or str(exc)).lower()
    return code in _BUSY_IF_SAYS and any(words in message for words in _BUSY_WORDS)


def classify(exc: libvirt.libvirtError, *, what: str = "") -> HypervisorError:
    """Turn a libvirtError into the portal error that names what happened: plain words for users,
    libvirt's text (prefixed with `what`) in `detail` for administrators."""
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    detail = f"{what}: {message}" if what else message
    if is_busy_error(exc):
        return HypervisorBusy(detail=detail, libvirt_code=code)
    if code in _NOT_FOUND:
        return DomainNotFound(_NOT_FOUND[code], detail=detail, libvirt_code=code)
    if code in _INVALID_STATE:
        return HypervisorInvalidState(detail=detail, libvirt_code=code)
    if code in _UNSUPPORTED:
        return Unsupported(detail=detail, libvirt_code=code)
    if is_connection_error(exc):
        return HypervisorUnavailable(detail=f"{what + ': ' if what else ''}hypervisor unreachable: {message}",
                                     libvirt_code=code)
    return OperationFailed(detail=detail, libvirt_code=code)
