"""libvirtError -> portal exceptions, classified by libvirt's error code at the gateway boundary."""

from __future__ import annotations

import libvirt

from portal.exceptions import (
    DomainNotFound,
    HypervisorError,
    HypervisorInvalidState,
    HypervisorUnavailable,
    OperationFailed,
    Unsupported,
)

_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_NETWORK,
    libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
}
_INVALID_STATE = {libvirt.VIR_ERR_OPERATION_INVALID}
_UNSUPPORTED = {libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED}
_CONNECTION = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_ERR_RPC,
               libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_AUTH_UNAVAILABLE}


def is_connection_error(exc: libvirt.libvirtError) -> bool:
    code = exc.get_error_code()
    if code in _CONNECTION:
        return True
    message = (exc.get_error_message() or "").lower()
    return code in {libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_INTERNAL_ERROR} and (
        "socket" in message or "connection" in message or "end of file" in message
    )


def classify(exc: libvirt.libvirtError, *, what: str = "") -> HypervisorError:
    """Turn a libvirtError into the portal error that names what happened, keeping libvirt's text."""
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    prefix = f"{what}: " if what else ""
    if code in _NOT_FOUND:
        return DomainNotFound(f"{prefix}{message}", libvirt_code=code)
    if code in _INVALID_STATE:
        return HypervisorInvalidState(f"{prefix}{message}", libvirt_code=code)
    if code in _UNSUPPORTED:
        return Unsupported(f"{prefix}{message}", libvirt_code=code)
    if is_connection_error(exc):
        return HypervisorUnavailable(f"{prefix}hypervisor unreachable: {message}", libvirt_code=code)
    return OperationFailed(f"{prefix}{message}", libvirt_code=code)
