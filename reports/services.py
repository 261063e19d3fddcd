"""Reports' one write: stopping idle VMs (issue #14). Each stop is the VMs' own `vm_stop` (its job, its audit
row); the batch is audited once more as `report.idle_stop` with what was stopped and what was refused."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import User

from portal.actors import Actor, require_admin
from portal.audit import audit
from portal.choices import Via
from portal.exceptions import PermissionDenied, PortalError, user_message
from vms.services import vm_stop

from .usage import idle_vms

log = logging.getLogger("reports")


@dataclass(frozen=True)
class IdleStop:
    """What became of one VM asked to stop: its job, or why not."""

    vm_id: int
    name: str
    stopped: bool
    message: str
    job_id: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {"vm": self.vm_id, "name": self.name, "stopped": self.stopped, "message": self.message,
                "job": self.job_id}


def idle_vms_stop(*, actor: Actor, via: str, vm_ids: Sequence[int] | None = None, now: datetime | None = None,
                  cpu_pct: float | None = None, days: float | None = None) -> list[IdleStop]:
    """Stop the idle VMs (all of them, or those of `vm_ids` that are idle now: a VM that is no longer idle
    or not running is refused, never stopped), idle by the same `cpu_pct` and `days` as the list that
    showed them (default: the settings). Administrators only; each stop is a `vm.stop` job."""
    admin = require_admin(actor, "Only administrators can stop idle VMs.")
    if admin is None:
        raise PermissionDenied("Stopping idle VMs needs an administrator's account to record them under.")
    idle = {item.vm.pk: item for item in idle_vms(actor=admin, now=now, cpu_pct=cpu_pct, days=days)}
    wanted = list(dict.fromkeys(int(pk) for pk in vm_ids)) if vm_ids is not None else list(idle)
    results: list[IdleStop] = []
    for pk in wanted:
        item = idle.get(pk)
        if item is None:
            results.append(IdleStop(pk, "", False, f"VM {pk} is not idle (or not running): left alone."))
            continue
        try:
            result = vm_stop(actor=admin, via=via, vm=item.vm.pk)
        except PortalError as exc:
            results.append(IdleStop(pk, item.vm.name, False, user_message(exc, user=admin)))
            continue
        results.append(IdleStop(pk, item.vm.name, True, result.message,
                                str(result.job.pk) if result.job is not None else None))
    stopped = [r.vm_id for r in results if r.stopped]
    refused = [r.vm_id for r in results if not r.stopped]
    audit(actor=admin, via=via, action="report.idle_stop", target_type="report", target_name="idle VMs",
          message=f"Stopping {len(stopped)} idle VM(s); {len(refused)} left alone.",
          data={"stopped": stopped, "refused": refused})
    return results


_last_auto_stop: float | None = None


def idle_auto_stop() -> list[IdleStop] | None:
    """The housekeeping chore: with IDLE_AUTO_STOP on, stop every idle VM at most every
    IDLE_AUTO_STOP_EVERY_SECONDS, as the administrator IDLE_AUTO_STOP_AS. Off (the default): nothing."""
    global _last_auto_stop
    if not settings.IDLE_AUTO_STOP:
        return None
    monotonic = time.monotonic()
    if _last_auto_stop is not None and monotonic - _last_auto_stop < settings.IDLE_AUTO_STOP_EVERY_SECONDS:
        return None
    _last_auto_stop = monotonic
    admin = User.objects.filter(username=settings.IDLE_AUTO_STOP_AS, is_active=True, is_staff=True).first()
    if admin is None:
        log.warning("IDLE_AUTO_STOP is on but IDLE_AUTO_STOP_AS (%r) names no active administrator: nothing stopped",
                    settings.IDLE_AUTO_STOP_AS)
        return None
    return idle_vms_stop(actor=admin, via=Via.SYSTEM, vm_ids=None)
