"""Periodic chores of the apps, run by the monitor next to the reconcile (and by `sync_hypervisor`).

cluster runs the loop and knows no chores: an app registers a function in its AppConfig.ready
(storage removes expired uploads). A chore that fails is logged and the others still run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("cluster.housekeeping")

_chores: dict[str, Callable[[], object]] = {}


def register_housekeeping(name: str, chore: Callable[[], object]) -> None:
    """Run `chore()` on every reconcile turn (registering a name again replaces it)."""
    _chores[name] = chore


def housekeeping_run() -> dict[str, object]:
    """Run every chore once; returns what each gave (None for one that failed, which is logged)."""
    results: dict[str, object] = {}
    for name, chore in list(_chores.items()):
        try:
            results[name] = chore()
        except Exception:
            log.exception("housekeeping chore %s failed", name)
            results[name] = None
    return results
