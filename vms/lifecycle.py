"""The VM lifecycle, declared once: which action may start from which state, what it becomes.

Every reader takes its rules from here: the record phase (vms.services), the one power-job handler
(vms.jobs), the buttons on the web pages and in Slack, the CLI, the API's action enum, and
reconcile (`status_for`, what a libvirt power state means for a VM).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from portal.hypervisor import PowerState

from .choices import VMStatus


@dataclass(frozen=True)
class Transition:
    """One action on a VM.

    `allowed` are the states it may start from; in a `noop` state it is accepted and does nothing;
    `transitional` is shown while the job runs (None: the state stays until the job ends); the job
    of `job_kind` calls the gateway's `verb` and leaves the VM `result`. `why_not` gives the
    sentence for a refusal from a particular state; `waits_for_snapshots` is False for the one
    action that must always be possible (cutting the power).
    """

    action: str
    label: str
    help: str
    allowed: frozenset[str]
    transitional: str | None
    job_kind: str
    verb: str
    result: str
    doing: str  # "Starting": the message when it is accepted ("Starting web-1.")
    progress: str  # the job's first step
    done: str  # audit action written when the job succeeds
    done_message: str  # "{name}" is the VM's name
    noop: frozenset[str] = frozenset()
    why_not: dict[str, str] = field(default_factory=dict)
    waits_for_snapshots: bool = True
    destructive: bool = False  # doors ask for confirmation first
    confirm: str = ""  # what a confirmation says will happen (doors that ask first show it)
    waits_for_power_off: bool = False  # the verb only asks (ACPI): the job waits until the guest is off
    redefines_missing: bool = False  # a domain removed behind the portal's back is defined again first

    def refusal(self, *, name: str, status: str, transitional: bool) -> str:
        """The sentence shown when the action is not allowed in `status`."""
        label = VMStatus(status).label.lower()
        reason = self.why_not.get(status) or (f"is busy ({label})" if transitional else f"is {label}")
        return f"Cannot {self.action.replace('_', ' ')} {name}: it {reason}."


_S = VMStatus

POWER_ACTIONS: dict[str, Transition] = {t.action: t for t in (
    Transition(
        action="start", label="Start", help="Power on",
        allowed=frozenset({_S.STOPPED, _S.ERROR}), noop=frozenset({_S.RUNNING}), transitional=_S.STARTING,
        job_kind="vm.start", verb="start", result=_S.RUNNING, doing="Starting", progress="Starting",
        redefines_missing=True,
        done="vm.started", done_message="Started {name}"),
    Transition(
        action="stop", label="Stop", help="Ask the guest to shut down (ACPI power button)",
        allowed=frozenset({_S.RUNNING}), transitional=_S.STOPPING,
        job_kind="vm.stop", verb="shutdown", result=_S.STOPPED, doing="Stopping", progress="Sending the ACPI power-off signal",
        done="vm.stopped", done_message="Stopped {name} (ACPI)",
        confirm="The guest is asked to shut down (ACPI power button).", waits_for_power_off=True,
        why_not={_S.STOPPED: "is already stopped", _S.PAUSED: "is paused: resume it first, or use Force off"}),
    Transition(
        action="force_off", label="Force off", help="Cut the power at once; unsaved data in the guest is lost",
        allowed=frozenset({_S.RUNNING, _S.PAUSED, _S.STOPPING, _S.STARTING, _S.REBOOTING, _S.ERROR}),
        transitional=_S.STOPPING, job_kind="vm.force_off", verb="destroy", result=_S.STOPPED,
        doing="Forcing off", progress="Cutting the power", done="vm.forced_off", done_message="Forced off {name}",
        why_not={_S.STOPPED: "is already stopped"}, waits_for_snapshots=False, destructive=True,
        confirm="This cuts the power at once; unsaved data in the guest is lost."),
    Transition(
        action="reboot", label="Reboot", help="Ask the guest to restart",
        allowed=frozenset({_S.RUNNING}), transitional=_S.REBOOTING,
        job_kind="vm.reboot", verb="reboot", result=_S.RUNNING, doing="Rebooting", progress="Rebooting",
        done="vm.rebooted", done_message="Rebooted {name}", confirm="The guest is asked to restart.",
        why_not={_S.STOPPED: "is stopped: start it instead"}),
    Transition(
        action="pause", label="Pause", help="Freeze the VM in memory",
        allowed=frozenset({_S.RUNNING}), noop=frozenset({_S.PAUSED}), transitional=None,
        job_kind="vm.pause", verb="suspend", result=_S.PAUSED, doing="Pausing", progress="Pausing",
        done="vm.paused", done_message="Paused {name}", why_not={_S.STOPPED: "is stopped"}),
    Transition(
        action="resume", label="Resume", help="Continue a paused VM",
        allowed=frozenset({_S.PAUSED}), noop=frozenset({_S.RUNNING}), transitional=None,
        job_kind="vm.resume", verb="resume", result=_S.RUNNING, doing="Resuming", progress="Resuming",
        done="vm.resumed", done_message="Resumed {name}", why_not={_S.STOPPED: "is stopped: start it instead"}),
)}

# Delete: refused while a create, start, reboot or migration is under way; a delete is not repeated.
DELETE = Transition(
    action="delete", label="Delete", help="Remove the VM and its disks",
    allowed=frozenset(set(VMStatus.values) - {_S.CREATING, _S.STARTING, _S.REBOOTING, _S.DELETING, _S.DELETED,
                                               _S.MIGRATING}),
    noop=frozenset({_S.DELETING}), transitional=_S.DELETING, job_kind="vm.delete", verb="undefine",
    result=_S.DELETED, doing="Deleting", progress="Powering off", done="vm.deleted", done_message="Deleted {name}", destructive=True,
    confirm="This powers the VM off and removes it and its disks for good. There is no undo.")

# Every action a door may offer on a VM, in button order.
ACTIONS: dict[str, Transition] = {**POWER_ACTIONS, DELETE.action: DELETE}

# The VM states in which snapshots and disk growth may start.
SNAPSHOT_STATES: frozenset[str] = frozenset({_S.RUNNING, _S.STOPPED, _S.PAUSED})
# The states in which CD-ROM media may be inserted or ejected (live while running, in the definition
# while stopped; a paused guest cannot open its tray: resume it first).
MEDIA_STATES: frozenset[str] = frozenset({_S.RUNNING, _S.STOPPED})
MEDIA_WHY_NOT: dict[str, str] = {_S.PAUSED: "is paused: resume it first"}
# The states in which a VM may be sealed into a template (its disk must not change while it is copied).
TEMPLATE_STATES: frozenset[str] = frozenset({_S.STOPPED})
# The states in which a console can connect.
CONSOLE_STATES: frozenset[str] = frozenset({_S.RUNNING, _S.PAUSED})


def by_job_kind(kind: str) -> Transition:
    """The power transition a job of `kind` carries out."""
    for transition in POWER_ACTIONS.values():
        if transition.job_kind == kind:
            return transition
    raise KeyError(kind)


def allowed_actions(status: str) -> list[str]:
    """The actions a door may offer for a VM in `status` (the service still decides)."""
    return [name for name, t in ACTIONS.items() if status in t.allowed]


def action_rules() -> dict[str, list[str]]:
    """Which states enable which action (for pages that enable buttons as states change live)."""
    rules = {name: sorted(t.allowed) for name, t in ACTIONS.items()}
    rules["console"] = sorted(CONSOLE_STATES)
    rules["template"] = sorted(TEMPLATE_STATES)
    return rules


def status_for(state: PowerState | None) -> str:
    """The VM status that a libvirt power state means (None: the domain is gone)."""
    if state is None:
        return VMStatus.ERROR
    if state in (PowerState.RUNNING, PowerState.BLOCKED, PowerState.SHUTTING_DOWN):
        return VMStatus.RUNNING
    if state in (PowerState.PAUSED, PowerState.PMSUSPENDED):
        return VMStatus.PAUSED
    return VMStatus.STOPPED


# What each VM job does, in the words of the buttons that start it (registered with portal.jobs.labels).
JOB_LABELS: dict[str, str] = {
    "vm.create": "Create",
    "vm.bulk_create": "Create several",  # a batch's parent job (vms.bulk)
    **{t.job_kind: t.label for t in ACTIONS.values()},
    "vm.disk.grow": "Grow disk",
    "vm.template": "Make template",
    "vm.snapshot.create": "Take snapshot",
    "vm.snapshot.revert": "Revert to snapshot",
    "vm.snapshot.delete": "Delete snapshot",
    "vm.nic.add": "Add NIC",
    "vm.nic.remove": "Remove NIC",
    # disks (issue #11)
    "vm.disk.add": "Add disk",
    "vm.disk.remove": "Remove disk",
    "vm.disk.update": "Change disk",
    "volume.delete": "Delete disk",
    "vm.cdrom.insert": "Insert CD",
    "vm.cdrom.eject": "Eject CD",
    "vm.migrate": "Migrate",
    "vm.reset": "Reset to image",
}
