"""The hypervisor gateway: the only package that imports libvirt.

Callers get a driver for a host URI with `get_driver(uri)` and speak in the typed values of
`portal.hypervisor.types`; errors arrive as portal.exceptions.HypervisorError subclasses.
"""

from __future__ import annotations

import atexit
import threading
from typing import TYPE_CHECKING, Any

from .types import (  # noqa: F401
    BackupDiskSpec,
    BackupProgress,
    BackupStart,
    CallCount,
    Capabilities,
    CdromSpec,
    DhcpHost,
    DiskInfo,
    DiskSpec,
    DomainDefinition,
    DomainInfo,
    DomainSpec,
    DomainState,
    DomainStats,
    HostInfo,
    InterfaceInfo,
    Lease,
    LifecycleEvent,
    MigrationProgress,
    MigrationStats,
    NetworkInfo,
    NetworkSpec,
    NicSpec,
    PoolInfo,
    PowerState,
    SnapshotInfo,
    VolumeInfo,
)

if TYPE_CHECKING:  # the driver module loads libvirt: only when a driver is first asked for
    from .driver import LibvirtDriver

_drivers: dict[str, LibvirtDriver] = {}
_lock = threading.Lock()


def get_driver(uri: str) -> LibvirtDriver:
    """The process-wide driver for `uri` (one connection per URI, re-opened when lost)."""
    from .driver import LibvirtDriver  # lazily: importing the gateway must not load libvirt


    with _lock:
        driver = _drivers.get(uri)
        if driver is None:
            driver = _drivers[uri] = LibvirtDriver(uri, **_connection_settings())
        return driver


def _connection_settings() -> dict[str, Any]:
    """Connect deadline and keepalive from the settings (PORTAL_LIBVIRT_CONNECT_TIMEOUT,
    PORTAL_LIBVIRT_KEEPALIVE_INTERVAL, PORTAL_LIBVIRT_KEEPALIVE_COUNT), defaults outside Django."""
    try:
        from django.conf import settings

        return {
            "connect_timeout": float(getattr(settings, "LIBVIRT_CONNECT_TIMEOUT", 10)),
            "keepalive_interval": int(getattr(settings, "LIBVIRT_KEEPALIVE_INTERVAL", 3)),
            "keepalive_count": int(getattr(settings, "LIBVIRT_KEEPALIVE_COUNT", 3)),
        }
    except Exception:  # settings not configured (a script using the gateway alone)
        return {}


def reset_drivers() -> None:
    """Close every cached connection (tests, and after fork)."""
    with _lock:
        for driver in _drivers.values():
            driver.close()
        _drivers.clear()


atexit.register(reset_drivers)
