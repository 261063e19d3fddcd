"""Power management of hosts: the command agent, standby, fencing and "declared down".

The agent runs the commands an administrator set on the host (`power_on_command`,
`power_off_command`, `power_status_command`, e.g. `ipmitool -H bmc-{host} … chassis power off`):
split with shlex, `{host}` and `{uri}` replaced inside each word (so a host's name never becomes
shell syntax), run without a shell, with a timeout, output captured and kept in the audit row.

A host is *confirmed down* (`Host.confirmed_down_at`) once it was fenced through its agent or an
administrator declared it off: only then may its highly available VMs restart elsewhere (vms,
through the `host_down_confirmed` signal and the monitor's housekeeping). A host that merely stops
answering is never enough: its VMs may still be running.

libvirt's node suspend (virNodeSuspendForDuration) is not used: on a host that shares its kernel
with the portal (the test harness's namespace hosts) it would suspend the portal's machine too, and
a suspended host needs a wake-up timer the portal cannot set over libvirt.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from portal.actors import Actor, require_admin
from portal.audit import audit
from portal.exceptions import Conflict, HypervisorUnavailable, PortalError, ValidationFailed
from portal.hypervisor import get_driver
from portal.models import AuditEvent

from .choices import HostStatus
from .models import Host
from .signals import host_down_confirmed

log = logging.getLogger(__name__)

ON, OFF, STATUS = "on", "off", "status"
_FIELDS = {ON: "power_on_command", OFF: "power_off_command", STATUS: "power_status_command"}
OUTPUT_LIMIT = 4000  # characters of stdout/stderr kept in the audit row


def _timeout() -> float:
    return float(getattr(settings, "POWER_AGENT_TIMEOUT_SECONDS", 60))


@dataclass(frozen=True)
class PowerResult:
    """What one agent command did."""

    action: str
    argv: tuple[str, ...]
    returncode: int | None  # None: it did not finish (timeout) or could not start
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    seconds: float = 0.0
    error: str = ""  # why it could not start

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def summary(self) -> str:
        if self.error:
            return self.error
        if self.timed_out:
            return f"timed out after {self.seconds:.0f} s"
        tail = (self.stderr or self.stdout).strip().splitlines()
        return f"exit {self.returncode}" + (f": {tail[-1][:200]}" if tail else "")

    def data(self) -> dict:
        return {"action": self.action, "argv": list(self.argv), "returncode": self.returncode,
                "stdout": self.stdout[-OUTPUT_LIMIT:], "stderr": self.stderr[-OUTPUT_LIMIT:],
                "timed_out": self.timed_out, "seconds": round(self.seconds, 3)}


def power_agent_configured(host: Host, action: str = OFF) -> bool:
    """Has the host a command for `action` (on, off, status)?"""
    return bool(getattr(host, _FIELDS[action]).strip())


def power_command(host: Host, action: str) -> list[str]:
    """The host's command for `action` as argv, placeholders filled in each word; [] when none is set."""
    text = getattr(host, _FIELDS[action]).strip()
    if not text:
        return []
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ValidationFailed(f"The power {action} command of {host.name} cannot be parsed: {exc}.",
                               field=_FIELDS[action]) from None
    for placeholder, value in (("{host}", host.name), ("{uri}", host.uri)):
        if value.startswith("-") and any(w.startswith(placeholder) for w in words):
            # a word that starts with the placeholder would become an option of the agent's program
            raise ValidationFailed(f"The power {action} command of {host.name} would pass {value!r} as an option.",
                                   field=_FIELDS[action])
    return [w.replace("{host}", host.name).replace("{uri}", host.uri) for w in words]


def power_agent_run(*, host: Host, action: str, timeout: float | None = None) -> PowerResult:
    """Run the host's `action` command (no shell, a timeout, output captured); never raises for its failure."""
    argv = power_command(host, action)
    if not argv:
        return PowerResult(action, (), None, error=f"no power {action} command is set")
    timeout = _timeout() if timeout is None else timeout
    started = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, shell=False,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        def text(v: bytes | str | None) -> str:
            return v.decode(errors="replace") if isinstance(v, bytes) else (v or "")
        return PowerResult(action, tuple(argv), None, text(exc.stdout), text(exc.stderr), timed_out=True,
                           seconds=time.monotonic() - started)
    except OSError as exc:
        return PowerResult(action, tuple(argv), None, error=f"cannot run {argv[0]}: {exc.strerror or exc}",
                           seconds=time.monotonic() - started)
    result = PowerResult(action, tuple(argv), proc.returncode, proc.stdout, proc.stderr,
                         seconds=time.monotonic() - started)
    log.info("power %s of %s: %s", action, host.name, result.summary())
    return result


def host_power_status(*, host: Host) -> bool | None:
    """Is the host powered on, by its status command (exit 0: on)? None when it has none (or it failed to run)."""
    if not power_agent_configured(host, STATUS):
        return None
    result = power_agent_run(host=host, action=STATUS)
    if result.error or result.timed_out:
        return None
    return result.ok


def _run_audited(*, actor: Actor, via: str, host: Host, action: str, audit_action: str, reason: str) -> PowerResult:
    if not power_agent_configured(host, action):
        raise Conflict(f"Host {host.name} has no power {action} command: set one on the host first.",
                       host=host.name)
    result = power_agent_run(host=host, action=action)
    why = f" ({reason})" if reason else ""
    if not result.ok:
        audit(actor=actor, via=via, action=audit_action, target=host, outcome=AuditEvent.Outcome.FAILED,
              message=f"Power {action} of {host.name} failed{why}: {result.summary()}", data=result.data())
        raise Conflict(f"The power {action} command of {host.name} failed: {result.summary()}.", host=host.name)
    audit(actor=actor, via=via, action=audit_action, target=host,
          message=f"Powered {action} {host.name}{why}: {result.summary()}", data=result.data())
    return result


def _set_status(host: Host, status: str, **fields: object) -> None:
    now = timezone.now()
    Host.objects.filter(pk=host.pk).update(status=status, status_changed_at=now, **fields)
    host.status, host.status_changed_at = status, now
    for key, value in fields.items():
        setattr(host, key, value)


def host_power_off(*, actor: Actor, via: str, host: Host, reason: str = "") -> PowerResult:
    """Power the host off through its agent: it goes on standby (no VMs are placed there; power on wakes it)."""
    require_admin(actor, "Only administrators power hosts off.")
    running = _running_domains(host)
    if running:
        raise Conflict(f"{running} domain(s) run on {host.name}: put it into maintenance first (its VMs move away), "
                       "or fence it if it is failing.", host=host.name)
    result = _run_audited(actor=actor, via=via, host=host, action=OFF, audit_action="host.power_off", reason=reason)
    _set_status(host, HostStatus.STANDBY)
    return result


def _running_domains(host: Host) -> int:
    """How many domains run on the host, by libvirt (0 when it cannot be reached: it is off, or as good as)."""
    try:
        return sum(1 for d in get_driver(host.uri).list_domains() if d.state.is_active)
    except PortalError:
        return 0


def host_power_on(*, actor: Actor, via: str, host: Host, reason: str = "") -> PowerResult:
    """Power the host on through its agent; it becomes up once the monitor reaches libvirt on it again."""
    require_admin(actor, "Only administrators power hosts on.")
    return _run_audited(actor=actor, via=via, host=host, action=ON, audit_action="host.power_on", reason=reason)


def host_answers(host: Host) -> bool:
    """Does libvirt on the host answer now? (A host that does is not down, whatever anyone says.)"""
    try:
        get_driver(host.uri).host_info()
    except HypervisorUnavailable:
        return False
    except PortalError:
        return True  # it answered, with an error
    return True


def _confirm_down(*, actor: Actor, via: str, host: Host, action: str, message: str, data: dict | None = None) -> Host:
    with transaction.atomic():
        locked = Host.objects.select_for_update().get(pk=host.pk)
        _set_status(locked, HostStatus.DOWN, confirmed_down_at=timezone.now(), last_error=message)
        audit(actor=actor, via=via, action=action, target=locked, message=message, data=data)
        # After the commit: vms restarts the host's highly available VMs elsewhere (cluster knows no VMs).
        transaction.on_commit(lambda: _announce_down(locked))
    host.status, host.confirmed_down_at, host.last_error = locked.status, locked.confirmed_down_at, message
    return host


def _announce_down(host: Host) -> None:
    for receiver, result in host_down_confirmed.send_robust(sender=Host, host=host):
        if isinstance(result, Exception):
            log.error("host_down_confirmed receiver %r failed for %s", receiver, host.name, exc_info=result)


def host_fence(*, actor: Actor, via: str, host: Host) -> PowerResult:
    """Power the host off through its agent and record it confirmed down (its HA VMs may restart elsewhere).

    Refused without a power-off command: an administrator who knows the host is off declares it down
    instead. When the host has a status command, it must report the host off afterwards.
    """
    require_admin(actor, "Only administrators fence hosts.")
    if not power_agent_configured(host, OFF):
        raise Conflict(f"Host {host.name} has no power agent (power-off command) to fence it with: declare it "
                       "down by hand instead, once you know it is off.", host=host.name)
    result = _run_audited(actor=actor, via=via, host=host, action=OFF, audit_action="host.power_off",
                          reason="fencing")
    if host_power_status(host=host) is True:
        audit(actor=actor, via=via, action="host.fence", target=host, outcome=AuditEvent.Outcome.FAILED,
              message=f"{host.name} still reports power on after the power-off command: not confirmed down")
        raise Conflict(f"{host.name} still reports power on after the power-off command; it is not confirmed "
                       "down.", host=host.name)
    _confirm_down(actor=actor, via=via, host=host, action="host.fence",
                  message=f"Fenced {host.name} through its power agent: confirmed down", data=result.data())
    return result


def host_declare_down(*, actor: Actor, via: str, host: Host) -> Host:
    """An administrator confirms the host is off: recorded confirmed down (its HA VMs may restart elsewhere).

    Refused while libvirt on the host still answers: its VMs may be running, and starting them
    elsewhere would run them twice.
    """
    require_admin(actor, "Only administrators declare hosts down.")
    if host_answers(host):
        audit(actor=actor, via=via, action="host.declare_down", target=host, outcome=AuditEvent.Outcome.DENIED,
              message=f"{host.name} still answers libvirt: not declared down")
        raise Conflict(f"{host.name} still answers libvirt, so it is not down: its VMs may be running. Power it "
                       "off (or fence it) first.", host=host.name)
    return _confirm_down(actor=actor, via=via, host=host, action="host.declare_down",
                         message=f"{host.name} declared down (confirmed off) by an administrator")


def cluster_capacity_short(*, cluster_id: int | None, reason: str) -> None:
    """Placement found no room in a cluster: recorded, so power saving wakes a standby host on its next pass."""
    if cluster_id is None:
        return
    audit(actor=None, via="system", action="cluster.capacity_short", target_type="cluster",
          target_id=str(cluster_id), message=reason[:500])
