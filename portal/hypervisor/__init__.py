"""The hypervisor gateway: the only package that imports libvirt.

Callers get a driver for a host URI with `get_driver(uri)` and speak in the typed values of
`portal.hypervisor.types`; errors arrive as portal.exceptions.HypervisorError subclasses.
"""

from __future__ import annotations

import atexit
import threading

from .types import (  # noqa: F401
    Capabilities,
    DiskSpec,
    DomainInfo,
    DomainSpec,
    HostInfo,
    LifecycleEvent,
    NicSpec,
    PowerState,
    SnapshotInfo,
    VolumeInfo,
)

_drivers: dict[str, object] = {}
_lock = threading.Lock()


def get_driver(uri: str):  # -> LibvirtDriver (imported lazily so libvirt loads only when used)
    """The process-wide driver for `uri` (one connection per URI, re-opened when lost)."""
    from .driver import LibvirtDriver

    with _lock:
        driver = _drivers.get(uri)
        if driver is None:
            driver = _drivers[uri] = LibvirtDriver(uri)
        return driver


def reset_drivers() -> None:
    """Close every cached connection (tests, and after fork)."""
    with _lock:
        for driver in _drivers.values():
            driver.close()
        _drivers.clear()


atexit.register(reset_drivers)
