"""Slack wording and Block Kit: pure functions from portal objects to message text and blocks.

Anything that came from a user (names, reasons, error messages quoting input) goes through `esc`,
so `<@U123>`, `<!channel>` or a link in an argument is shown as text, never as a mention or link.
Every domain error reaches Slack through `error_reply`, the one mapping for this door: the sentence
is `portal.exceptions.user_message` (the exception's own message, or plain words instead of a hypervisor's
for non-administrators), and a refused quota offers [Request more] for exactly what was asked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from portal.choices import JobStatus
from portal.exceptions import PortalError, QuotaExceeded, user_message
from portal.jobs.labels import job_label
from portal.units import filesize, mib
from vms import lifecycle

# Action ids of buttons (the Bolt app routes on these).
A_START = "vm_start"
A_STOP = "vm_stop"
A_PAUSE = "vm_pause"
A_RESUME = "vm_resume"
A_REBOOT = "vm_reboot"
A_FORCE_OFF = "vm_force_off"
A_DELETE = "vm_delete"
A_CONSOLE = "vm_console"
A_CANCEL = "vm_cancel"
A_QUOTA_REQUEST = "quota_request"
A_QUOTA_APPROVE = "quota_approve"
A_QUOTA_DENY = "quota_deny"
A_SNAPSHOT_REVERT = "vm_snapshot_revert"

ACTION_IDS = {"start": A_START, "stop": A_STOP, "pause": A_PAUSE, "resume": A_RESUME, "reboot": A_REBOOT,
              "force_off": A_FORCE_OFF, "delete": A_DELETE}
ACTION_BY_ID = {v: k for k, v in ACTION_IDS.items()}
# The buttons a VM message offers, in this order, where the lifecycle table allows them in the VM's state
# (labels, confirmations and allowed states all come from vms.lifecycle, as on the web pages).
VM_BUTTONS = ("start", "stop", "resume", "pause")
STATUS_ICONS = {
    "running": "🟢", "stopped": "⚪", "paused": "⏸️", "error": "🔴", "deleted": "🗑️",
    "creating": "⏳", "starting": "⏳", "stopping": "⏳", "rebooting": "⏳", "deleting": "⏳",
}
SECTION_MAX = 2900
MAX_LISTED = 40


@dataclass
class Reply:
    """A message for Slack: plain `text` (notifications, fallbacks) and optional Block Kit `blocks`."""

    text: str
    blocks: list[dict[str, Any]] | None = None
    response_type: str = "ephemeral"
    extra: dict[str, Any] = field(default_factory=dict)

    def as_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"text": self.text, "response_type": self.response_type}
        if self.blocks:
            body["blocks"] = self.blocks
        return body


# --- primitives ----------------------------------------------------------------------------------

def esc(value: object) -> str:
    """Escape text for Slack mrkdwn: no mentions, channel pings or links can be smuggled in."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int = SECTION_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text)}}


def context(text: str) -> dict:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(text)}]}


def actions(*buttons: dict) -> dict:
    return {"type": "actions", "elements": list(buttons)}


def confirm_dialog(title: str, text: str, confirm: str, *, style: str = "danger") -> dict:
    return {
        "title": {"type": "plain_text", "text": _cut(title, 100)},
        "text": {"type": "mrkdwn", "text": _cut(text, 300)},
        "confirm": {"type": "plain_text", "text": _cut(confirm, 30)},
        "deny": {"type": "plain_text", "text": "Cancel"},
        "style": style,
    }


def button(text: str, action_id: str, value: str = "", *, style: str | None = None, url: str | None = None,
           confirm: dict | None = None) -> dict:
    element: dict[str, Any] = {"type": "button", "text": {"type": "plain_text", "text": _cut(text, 75)},
                               "action_id": action_id}
    if value:
        element["value"] = value
    if style:
        element["style"] = style
    if url:
        element["url"] = url
    if confirm:
        element["confirm"] = confirm
    return element


def mention(slack_user_id: str) -> str:
    return f"<@{slack_user_id}>" if slack_user_id else "someone"


def short_id(job) -> str:
    return str(job.pk)[:8]


def portal_url(path: str) -> str:
    return settings.PORTAL_BASE_URL.rstrip("/") + path


def console_url(vm) -> str:
    return portal_url(f"/consoles/vm/{vm.pk}/screen/")


def vm_url(vm) -> str:
    try:
        return portal_url(reverse("vms:detail", args=[vm.pk]))
    except Exception:  # the web views are optional for the bot
        return portal_url("/")


def job_url(job) -> str:
    try:
        return portal_url(reverse("jobs:detail", args=[job.pk]))
    except Exception:  # the web views are optional for the bot
        return portal_url("/")


def specs(vm) -> str:
    image = f" · {esc(vm.image.name)}" if vm.image_id else ""
    return f"{vm.vcpus} vCPU · {mib(vm.memory_mib)} · {vm.disk_gib} GiB{image}"


def status_label(vm) -> str:
    return f"{STATUS_ICONS.get(vm.status, '•')} {vm.get_status_display()}"


# --- replies to commands -------------------------------------------------------------------------

def help_reply(prefix: str, *, is_staff: bool = False, linked: bool = True) -> Reply:
    lines = [
        "*VM Portal from Slack*",
        f"`{prefix} list` — your VMs and their state",
        f"`{prefix} create NAME --flavor small --image demo` — create and start a VM "
        "(or `--cpus N --memory MiB --disk GiB`; also `--description TEXT`, `--group TEAM`, "
        "`--net NAME[,NAME]` for its networks, `--net none` for no NIC; default: your default network; "
        "from a template: `--image TEMPLATE` takes its sizes, `--clone full` makes a standalone copy of it; "
        "`--lease 7d` gives it a lease, `--lease none` none, within your group's policy)",
        f"`{prefix} extend NAME 7d` · `{prefix} extend NAME 2030-01-31` — extend the VM's lease (within policy)",
        f"`{prefix} create-many PATTERN COUNT --image IMAGE` — several VMs at once, named by the pattern "
        "(`lab-{n:02}` gives lab-01, lab-02, …; same options as create, `--start N` for the first number, "
        "`--partial yes` for as many as fit your quota)",
        f"`{prefix} info NAME` — the VM's state, size, NICs with their addresses, and its ssh line",
        f"`{prefix} networks` — the networks you can put VMs on (the default one marked)",
        f"`{prefix} images [disk|iso|template]` — the images you can create VMs from "
        f"(`{prefix} create NAME --image TEMPLATE` makes a VM from a template)",
        f"`{prefix} start NAME` · `{prefix} stop NAME` (ACPI shutdown) · `{prefix} reboot NAME` · "
        f"`{prefix} force-off NAME` (cut the power) — stop, reboot and force off ask first",
        f"`{prefix} pause NAME` · `{prefix} resume NAME` — freeze a running VM in memory, and carry on",
        f"`{prefix} delete NAME` — remove the VM and its disks (asks first)",
        f"`{prefix} grow-disk NAME GiB` — grow the VM's disk (never shrinks; counts against your quota)",
        f"`{prefix} snapshot NAME [SNAPSHOT]` — snapshot disks and memory · `{prefix} snapshots NAME` — "
        f"list them · `{prefix} revert NAME SNAPSHOT` — go back to one (asks first)",
        # backups (issue #11)
        f"`{prefix} backup NAME [full|incremental]` — back the VM up (default: incremental when possible) · "
        f"`{prefix} backups [NAME]` — your backups with sizes, and Restore buttons · "
        f"`{prefix} restore BACKUP-ID NEW-NAME` — restore one to a new VM",
        f"`{prefix} console NAME` — a link to the VM's screen in the portal (only you see it)",
        f"`{prefix} keys` — your SSH keys (add them in the portal: they go into the VMs you create)",
        f"`{prefix} quota` — usage and limits · "
        f"`{prefix} quota request --vms N --cpus N --memory MiB --disk GiB --backup GiB REASON` — ask for more",
        f"`{prefix} subscribe [here|me] [jobs|failures|vm-state|all]` · `{prefix} unsubscribe [here|me]` · "
        f"`{prefix} subscriptions` — notifications in this channel or by direct message",
        f"`{prefix} link` — link your Slack account to your portal account · "
        f"`{prefix} unlink` — undo it",
    ]
    if is_staff:
        lines.append(f"`{prefix} hosts` — hypervisor hosts and their load (administrators)")
        lines.append(f"`{prefix} migrate NAME [HOST]` — move a running VM live to HOST, or to the best host "
                     "(administrators)")
    if not linked:
        lines.append(f"\n:link: Your Slack account is not linked yet: start with `{prefix} link`.")
    return Reply(text="\n".join(lines), blocks=[section("\n".join(lines))])


def unlinked_reply(prefix: str) -> Reply:
    text = (f":link: Your Slack account is not linked to a portal account yet, so nothing was done. "
            f"Type `{prefix} link` to link it.")
    return Reply(text=text)


def inactive_reply() -> Reply:
    return Reply(text="Your portal account is disabled, so nothing was done. Ask an administrator.")


def connecting_reply() -> Reply:
    """The portal has not yet heard from Slack which workspace its bot belongs to (just started)."""
    return Reply(text="The portal is still connecting to Slack, so nothing was done. Try again in a few seconds.")


def unknown_team_reply() -> Reply:
    return Reply(text="This Slack workspace is not connected to this portal, so nothing was done.")


def parse_error_reply(message: str, prefix: str) -> Reply:
    return Reply(text=f":warning: {esc(message)}\nType `{prefix} help` for the commands.")


def error_reply(exc: PortalError, *, user=None) -> Reply:
    """The one mapping of domain errors to Slack, shown only to the user who asked.

    The words are `user_message`'s (the exception's message; plain words, never a host's internals,
    for non-administrators), escaped. A refused quota carries what was asked for, so the reply
    offers [Request more] for just that (the quota-request service re-checks everything).
    """
    if isinstance(exc, QuotaExceeded):
        text = f":no_entry: {esc(user_message(exc, user=user))}"
        size = request_more_value(exc)
        if size is None:
            return Reply(text=text)
        return Reply(text=text, blocks=[section(text), actions(button("Request more", A_QUOTA_REQUEST, size,
                                                                      style="primary"))])
    return Reply(text=f":warning: {esc(user_message(exc, user=user))}")


def request_more_value(exc: QuotaExceeded) -> str | None:
    """The [Request more] button's value: the refused request's resources (and group), as JSON."""
    wanted = exc.requested_resources
    if not wanted:
        return None
    size: dict[str, Any] = {key: int(wanted.get(key) or 0) for key in ("vms", "vcpus", "memory_mib", "disk_gib")}
    if exc.group_id is not None:
        size["group"] = exc.group_id
    return json.dumps(size, separators=(",", ":"))


def internal_error_reply() -> Reply:
    """What a user reads when the portal itself failed (a bug): the details are in the log."""
    return Reply(text="Something went wrong in the portal; the error was logged for the administrators.")


def noop_reply(message: str) -> Reply:
    """A service that had nothing to do ("web-1 is already running.")."""
    return Reply(text=f"ℹ️ {esc(message)}")


def unlink_reply(username: str, prefix: str) -> Reply:
    return Reply(text=f"🔓 Your Slack account is no longer linked to the portal account *{esc(username)}*. "
                      f"Type `{prefix} link` to link it again.")


def link_refused_dm(*, linked_to: str, tried_by: str, prefix: str) -> Reply:
    """To a Slack user whose link another portal account tried to take over."""
    text = (f":warning: The portal account *{esc(tried_by)}* tried to link your Slack account, which is linked "
            f"to *{esc(linked_to)}*. Nothing was changed. If you want to switch portal accounts, type "
            f"`{prefix} unlink` first, then `{prefix} link`.")
    return Reply(text=text, blocks=[section(text)])


def lease_reminder_dm(vm, *, expires_at, days_before: int, prefix: str) -> Reply:
    """To a VM's owner: its lease ends soon (vms.leases reminders)."""
    when = timezone.localtime(expires_at).strftime("%Y-%m-%d %H:%M %Z")
    left = "in less than a day" if days_before <= 1 else f"in less than {days_before} days"
    text = (f":hourglass_flowing_sand: The lease of your VM *{esc(vm.name)}* ends {left} ({when}); then it is "
            f"stopped. To keep it, type `{prefix} extend {esc(vm.name)} 7d` or use Extend on <{vm_url(vm)}|its page>.")
    return Reply(text=text, blocks=[section(text)])


def lease_expired_dm(vm, *, expires_at, what: str, prefix: str) -> Reply:
    """To a VM's owner: its lease ended and the expiry pass stopped (or, after the grace period, deleted) it."""
    when = timezone.localtime(expires_at).strftime("%Y-%m-%d %H:%M %Z")
    if what == "deleted":
        text = (f":wastebasket: Your VM *{esc(vm.name)}* is being deleted: its lease ended {when} and the grace "
                "period is over.")
    else:
        text = (f":stopwatch: The lease of your VM *{esc(vm.name)}* ended {when}: it is stopped. "
                f"Extend it (`{prefix} extend {esc(vm.name)} 7d`) before anything else happens to it, "
                f"then start it again.")
    return Reply(text=text, blocks=[section(text)])


def duplicate_reply() -> Reply:
    return Reply(text="This request was already handled; nothing was done again.")


def vm_list_reply(vms: list, *, user, total: int, prefix: str = "/vm") -> Reply:
    if not vms:
        text = f"No VMs yet. Create one with `{prefix} create NAME --flavor small`."
        return Reply(text=text)
    title = "All VMs" if user.is_staff else "Your VMs"
    lines = [f"*{title}* ({total})"]
    for vm in vms[:MAX_LISTED]:
        owner = f" · {esc(vm.owner.get_username())}" if vm.owner_id != user.pk else ""
        line = f"{status_label(vm)}  *{esc(vm.name)}* — {specs(vm)}{owner}"
        if vm.last_error:
            line += f"\n      _{esc(vm.last_error[:150])}_"
        lines.append(line)
    if total > MAX_LISTED:
        lines.append(f"…and {total - MAX_LISTED} more: <{portal_url('/')}|see them all in the portal>.")
    text = "\n".join(lines)
    return Reply(text=text, blocks=[section(text)])


def key_list_reply(keys: list, *, total: int, url: str) -> Reply:
    """The caller's SSH keys: name, type and fingerprint (never the key itself: the chat keeps it)."""
    if not keys:
        text = f"You have no SSH keys yet. <{url}|Add one in the portal>: new VMs get it for `ssh`."
        return Reply(text=text)
    lines = [f"*Your SSH keys* ({total})"]
    for key in keys[:MAX_LISTED]:
        lines.append(f"🔑 *{esc(key.name)}* — {esc(key.label)} · `{esc(key.fingerprint)}`")
    if total > MAX_LISTED:
        lines.append(f"…and {total - MAX_LISTED} more.")
    lines.append(f"<{url}|Add or delete keys in the portal>.")
    text = "\n".join(lines)
    return Reply(text=text, blocks=[section(text)])


def bar(percent: int, width: int = 10) -> str:
    filled = max(0, min(width, round(percent * width / 100)))
    return "█" * filled + "░" * (width - filled)


def quota_text(usage: list) -> str:
    rows = []
    width = max([7, *(len(u.label) for u in usage)])  # "Backup space" (issue #11) is longer than the others
    for u in usage:
        if u.resource == "memory_mib":
            numbers = f"{mib(u.used)} / {mib(u.limit)}"
        else:
            unit = f" {u.unit}" if u.unit else ""
            numbers = f"{u.used} / {u.limit}{unit}"
        rows.append(f"{u.label:<{width}} {bar(u.percent)} {numbers}")
    return "```\n" + "\n".join(rows) + "\n```"


def quota_reply(usage: list, *, prefix: str, pending=None) -> Reply:
    text = "*Your quota*\n" + quota_text(usage)
    hint = f"Need more? `{prefix} quota request --vms N --cpus N --memory MiB --disk GiB --backup GiB REASON`"
    if pending is not None:
        hint = f"Quota request #{pending.pk} is waiting for an administrator."
    return Reply(text=text + "\n" + hint, blocks=[section(text), context(hint)])


def hosts_reply(capacity: list) -> Reply:
    """Hosts with what their VMs commit (vms.dashboard.host_capacity rows)."""
    if not capacity:
        return Reply(text="No hosts are registered.")
    icons = {"up": "🟢", "down": "🔴", "maintenance": "🛠️", "unknown": "⚪"}
    lines = ["*Hosts*"]
    for c in capacity:
        h = c.host
        line = (f"{icons.get(h.status, '•')} {h.get_status_display()}  *{esc(h.name)}* — "
                f"{c.vms} VM{'s' if c.vms != 1 else ''} · {c.vcpus} of {h.cpus} vCPUs · "
                f"{mib(c.memory_mib)} of {mib(h.memory_mib)} committed · {mib(h.free_memory_mib)} free")
        if c.foreign:
            line += f" · {c.foreign} foreign domain{'s' if c.foreign != 1 else ''}"
        if not h.enabled:
            line += " · _disabled_"
        if h.last_error:
            line += f"\n      _{esc(h.last_error[:150])}_"
        lines.append(line)
    text = "\n".join(lines)
    return Reply(text=text, blocks=[section(text)])


def link_reply(url: str, ttl_minutes: int) -> Reply:
    text = (f":link: <{url}|Link your Slack account to the portal> — open it while logged in to the portal. "
            f"The link works once and expires in {ttl_minutes} minutes. Only you can see this message.")
    return Reply(text=text)


def console_reply(vm, *, screen_url: str, terminal_url: str, ttl_minutes: int) -> Reply:
    text = (f":desktop_computer: <{screen_url}|Open the screen of {esc(vm.name)}> · "
            f"<{terminal_url}|serial terminal> ({vm.get_status_display().lower()}). "
            f"Only you can see these links; each works once, for your portal account, "
            f"within {ttl_minutes} minutes.")
    return Reply(text=text)


NIC_PENDING = {"attaching": " (being added)", "detaching": " (being removed)"}


def vm_info_reply(vm, nics: list, *, ssh: str | None, user=None) -> Reply:
    """One VM: state, size, host (administrators), each NIC's network, MAC and address, the ssh line."""
    head = f"{status_label(vm)}  *{esc(vm.name)}* — {specs(vm)}"
    if user is not None and user.is_staff and vm.host_id:
        head += f" · on {esc(vm.host.name)}"
    if user is not None and vm.owner_id != user.pk:
        head += f" · {esc(vm.owner.get_username())}"
    lines = [head]
    if vm.last_error:
        lines.append(f"_{esc(vm.last_error[:300])}_")
    if nics:
        for nic in nics:
            address = f"`{esc(nic.ip_address)}`" if nic.ip_address else "_no address yet_"
            lines.append(f"• `{esc(nic.network.name)}` · `{esc(nic.mac)}` · {address}"
                         f"{NIC_PENDING.get(nic.status, '')}")
    else:
        lines.append("No NICs: the VM is on no network.")
    if ssh:
        lines.append(f"```{esc(ssh)}```")
    elif nics and vm.status == "running":
        lines.append("_The ssh line appears once the guest has taken an address (and if its image has an SSH login)._")
    lines.append(f"<{vm_url(vm)}|open in the portal>")
    text = "\n".join(lines)
    blocks = [section(text)]
    more = vm_buttons(vm) if vm.status != "deleted" else None
    if more is not None:
        blocks.append(more)
    return Reply(text=text, blocks=blocks)


MODE_WORDS = {"isolated": "isolated", "nat": "NAT", "bridge": "bridged"}


def networks_reply(networks: list, *, default=None, is_staff: bool = False, prefix: str = "/vm") -> Reply:
    """The networks a user may put VMs on (administrators: all, with who may use each)."""
    if not networks:
        return Reply(text="There is no network you can use, so your VMs are created without a NIC. "
                          "Ask an administrator for one.")
    lines = [f"*{'Networks' if is_staff else 'Networks you can use'}* ({len(networks)})"]
    for n in networks:
        mode = MODE_WORDS.get(n.mode, n.mode)
        shape = f"{mode} · {esc(n.cidr)}" if n.cidr else f"{mode} to `{esc(n.bridge)}`"
        line = f"• `{esc(n.name)}`"
        if default is not None and n.pk == default.pk:
            line += " ⭐ *default*"
        line += f" — {esc(n.title) + ' · ' if n.title else ''}{shape}"
        if is_staff:
            groups = sorted(g.name for g in n.groups.all())
            line += " · " + ("open to all" if n.is_public else
                             f"groups {esc(', '.join(groups))}" if groups else "administrators only")
        lines.append(line)
    hint = (f"`{prefix} create NAME --net {esc(networks[0].name)}` puts a VM on a network (several: `--net a,b`; "
            f"none: `--net none`)" + ("; without `--net`, on the default one." if default is not None else "."))
    text = "\n".join(lines)
    return Reply(text=text + "\n" + hint, blocks=[section(text), context(hint)])


KIND_WORDS = {"disk": "disk image", "iso": "ISO", "template": "template"}
KIND_ICONS = {"disk": "💽", "iso": "💿", "template": "📐"}


def images_reply(images: list, *, total: int, user, kind: str = "", prefix: str = "/vm", url: str = "") -> Reply:
    """The images a user may create VMs from: kind, name, title, size, owner (the library's or someone's)."""
    what = {"disk": "disk images", "iso": "ISOs", "template": "templates"}.get(kind, "images")
    if not images:
        text = f"There are no {what} you can use yet. <{url}|Upload one in the portal>."
        return Reply(text=text)
    lines = [f"*{what[0].upper() + what[1:]} you can use* ({total})"]
    for image in images[:MAX_LISTED]:
        owner = ("library" if image.owner_id is None else "yours" if image.owner_id == user.pk
                 else esc(image.owner.get_username()))
        title = f"{esc(image.title)} · " if image.title and image.title != image.name else ""
        line = (f"{KIND_ICONS.get(image.kind, '•')} `{esc(image.name)}` — {title}{KIND_WORDS.get(image.kind, image.kind)}"
                f" · {filesize(image.size_bytes)} · {owner}")
        if image.is_default:
            line += " ⭐ *default*"
        lines.append(line)
    if total > MAX_LISTED:
        lines.append(f"…and {total - MAX_LISTED} more: <{url}|see them all in the portal>.")
    example = next((i for i in images if i.kind == "template"), images[0])
    hint = (f"`{prefix} create NAME --image {esc(example.name)}` creates a VM from one"
            f"{' (a template brings its sizes)' if example.kind == 'template' else ''}; "
            f"<{url}|upload or import images in the portal>.")
    text = "\n".join(lines)
    return Reply(text=text + "\n" + hint, blocks=[section(text), context(hint)])


def confirm_reply(action: str, vm) -> Reply:
    transition = lifecycle.ACTIONS[action]
    label = transition.label
    text = f"{label} *{esc(vm.name)}*? {transition.confirm}"
    blocks = [
        section(text),
        actions(
            button(f"{label} {vm.name}", ACTION_IDS[action], str(vm.pk), style="danger"),
            button("Cancel", A_CANCEL, str(vm.pk)),
        ),
    ]
    return Reply(text=text, blocks=blocks)


REVERT_TEXT = "Everything that changed since the snapshot was taken is lost."


def _revert_value(vm, snapshot) -> str:
    return f"{vm.pk}:{snapshot.pk}"


def snapshot_list_reply(vm, snapshots: list, *, prefix: str = "/vm") -> Reply:
    if not snapshots:
        text = f"*{esc(vm.name)}* has no snapshots. Take one with `{prefix} snapshot {esc(vm.name)}`."
        return Reply(text=text, blocks=[section(text)])
    lines = [f"*Snapshots of {esc(vm.name)}* ({len(snapshots)})"]
    blocks: list[dict[str, Any]] = [section(lines[0])]
    for snap in snapshots:
        holds = "disks and memory" if snap.has_memory else "disks"
        when = snap.taken_at or snap.created_at
        size = f" · {filesize(snap.size_bytes)}" if snap.size_bytes else ""  # counts against the disk quota
        line = (f"`{esc(snap.name)}` · {holds}{size} · {snap.get_status_display().lower()} · "
                f"<!date^{int(when.timestamp())}^{{date_short_pretty}} {{time}}|{when:%Y-%m-%d %H:%M} UTC>")
        if snap.description:
            line += f"\n_{esc(snap.description[:200])}_"
        lines.append(line)
        block = section(line)
        if snap.status == "ready":
            block["accessory"] = button("Revert", A_SNAPSHOT_REVERT, _revert_value(vm, snap), confirm=confirm_dialog(
                f"Revert {vm.name} to {snap.name}?", REVERT_TEXT, "Revert"))
        blocks.append(block)
    return Reply(text="\n".join(lines), blocks=blocks[:50])


def revert_confirm_reply(vm, snapshot) -> Reply:
    text = f"Revert *{esc(vm.name)}* to snapshot `{esc(snapshot.name)}`? {REVERT_TEXT}"
    blocks = [
        section(text),
        actions(
            button(f"Revert {vm.name}", A_SNAPSHOT_REVERT, _revert_value(vm, snapshot), style="danger"),
            button("Cancel", A_CANCEL, str(vm.pk)),
        ),
    ]
    return Reply(text=text, blocks=blocks)


def networks_text(vm) -> str:
    """" on lan, lab" (the networks of the VM's NICs), or nothing for a VM on no network."""
    names = [nic.network.name for nic in vm.nics.select_related("network").order_by("created_at", "id")]
    return f" on {esc(', '.join(names))}" if names else ""


def creating_text(*, slack_user_id: str, vm, job) -> str:
    return (f"{mention(slack_user_id)} is creating *{esc(vm.name)}* ({specs(vm)}){networks_text(vm)} · "
            f"job `{short_id(job)}`. I'll reply in this thread when it runs.")


def creating_many_text(*, slack_user_id: str, result) -> str:
    """A bulk create (issue #14): how many, their names, why fewer than asked, and the parent job."""
    names = [vm.name for vm in result.vms]
    shown = ", ".join(names[:5]) + (f" … {names[-1]}" if len(names) > 5 else "")
    fewer = f" ({esc(result.why_fewer)})" if result.why_fewer else ""
    asked = f" of {result.requested}" if result.created != result.requested else ""
    return (f"{mention(slack_user_id)} is creating {result.created}{asked} VMs: {esc(shown)}{fewer} · job "
            f"`{short_id(result.job)}` (<{job_url(result.job)}|progress>). I'll reply in this thread when they "
            "have all finished.")


def started_action_text(*, slack_user_id: str, message: str, job) -> str:
    """After a click or command: what was asked, by whom, and which job carries it out."""
    job_part = f" · job `{short_id(job)}`" if job is not None else ""
    return f"⏳ {esc(message)}{job_part} (asked by {mention(slack_user_id)})"


def _action_button(action: str, vm) -> dict:
    """A VM action's button, as the lifecycle table names it; a destructive one asks first."""
    transition = lifecycle.ACTIONS[action]
    pk = str(vm.pk)
    if transition.destructive:
        return button(transition.label, ACTION_IDS[action], pk, style="danger", confirm=confirm_dialog(
            f"{transition.label} {vm.name}?", transition.confirm, transition.label))
    if transition.confirm:
        return button(transition.label, ACTION_IDS[action], pk, confirm=confirm_dialog(
            f"{transition.label} {vm.name}?", transition.confirm, transition.label, style="primary"))
    return button(transition.label, ACTION_IDS[action], pk, style="primary" if action in ("start", "resume") else None)


def vm_buttons(vm) -> dict | None:
    """What can be done next with the VM, in its state: the table's actions, the console, delete."""
    allowed = set(lifecycle.allowed_actions(vm.status))
    elements = [_action_button(action, vm) for action in VM_BUTTONS if action in allowed]
    if vm.status in lifecycle.CONSOLE_STATES:
        elements.append(button("Console", A_CONSOLE, str(vm.pk), url=console_url(vm)))
    if elements and lifecycle.DELETE.action in allowed:
        elements.append(_action_button(lifecycle.DELETE.action, vm))
    return actions(*elements) if elements else None


_DONE = {
    "vm.create": "✅ *{name}* is running.",
    "vm.start": "▶️ *{name}* is running.",
    "vm.stop": "⏹️ *{name}* stopped.",
    "vm.force_off": "⏹️ *{name}* was forced off.",
    "vm.reboot": "🔄 *{name}* rebooted.",
    "vm.pause": "⏸️ *{name}* is paused.",
    "vm.resume": "▶️ *{name}* is running again.",
    "vm.delete": "🗑️ *{name}* was deleted with its disks.",
    "vm.disk.grow": "💽 The disk of *{name}* was grown.",
    "vm.nic.add": "🔌 *{name}* has a new NIC.",
    "vm.nic.remove": "🔌 A NIC of *{name}* was removed.",
    "vm.snapshot.create": "📸 Snapshot `{snapshot}` of *{name}* taken.",
    "vm.snapshot.revert": "⏪ *{name}* was reverted to snapshot `{snapshot}`.",
    "vm.snapshot.delete": "🗑️ Snapshot `{snapshot}` of *{name}* deleted.",
    "vm.template": "🧬 Template `{template}` made from *{name}*.",
    "vm.bulk_create": "✅ *{name}*: every VM was created.",
}


def job_result_reply(job, vm, *, slack_user_id: str = "") -> Reply:
    """The follow-up when a job ends: the outcome, and buttons for what makes sense next."""
    name = esc(vm.name if vm is not None else job.target_name)
    who = f"{mention(slack_user_id)} " if slack_user_id else ""
    if job.status == JobStatus.SUCCEEDED:
        line = _DONE.get(job.kind, "✅ {label} of *{name}* finished.").format(
            name=name, label=job_label(job.kind),
            snapshot=esc(str((job.params or {}).get("snapshot", ""))),
            template=esc(str((job.params or {}).get("name", ""))))
        if job.kind == "vm.create" and vm is not None and vm.status == "stopped":
            line = f"✅ *{name}* was created (stopped)."
    else:
        label = job_label(job.kind)
        line = f"❌ {label} of *{name}* failed: {esc(job.error or job.get_status_display())}"
    text = who + line
    if vm is not None and vm.status != "deleted":
        text += f"\n{status_label(vm)} · {specs(vm)} · <{vm_url(vm)}|open in the portal>"
    blocks = [section(text)]
    more = vm_buttons(vm) if vm is not None and vm.status != "deleted" else None
    if more is not None:
        blocks.append(more)
    return Reply(text=text, blocks=blocks, response_type="in_channel")


def job_notice(job, vm) -> Reply:
    """A subscription notice: one line per finished or failed job."""
    reply = job_result_reply(job, vm)
    actor = job.started_by if job.actor_id or job.plugin_id else "the system"  # a user, or "plugin NAME"
    reply.text += f"\n_by {esc(actor)} via {job.get_via_display()}_"
    reply.blocks = [section(reply.text)]
    return reply


def drift_notice(vm, message: str) -> Reply:
    text = f"⚠️ *{esc(vm.name)}* changed outside the portal: {esc(message)}\n{status_label(vm)}"
    return Reply(text=text, blocks=[section(text)])


def host_down_notice(host, reason: str) -> Reply:
    text = f"🔴 Host *{esc(host.name)}* is down: {esc(reason or 'unreachable')}"
    return Reply(text=text, blocks=[section(text)])


# --- quota requests ------------------------------------------------------------------------------

def quota_request_created_reply(request, summary: str, *, posted: bool) -> Reply:
    """`posted`: an administrators' channel is configured (the post itself follows the acknowledgement)."""
    where = "posted to the administrators" if posted else "sent to the administrators (they'll see it in the portal)"
    text = f"📨 Quota request #{request.pk} was {where}: {esc(summary)}. I'll tell you when it's decided."
    return Reply(text=text)


def quota_request_admin_post(request, summary: str, *, requester: str, usage_text: str) -> Reply:
    subject = f" for group *{esc(request.group.name)}*" if request.group_id else ""
    text = f"📈 *Quota request #{request.pk}* from {requester}{subject}: {esc(summary)}"
    if request.reason:
        text += f"\n>{esc(request.reason[:500])}"
    pk = str(request.pk)
    blocks = [
        section(text),
        context("Usage now:\n" + usage_text),
        actions(
            button("Approve", A_QUOTA_APPROVE, pk, style="primary"),
            button("Deny", A_QUOTA_DENY, pk, style="danger"),
        ),
    ]
    return Reply(text=text, blocks=blocks, response_type="in_channel")


def quota_request_decided_post(request, summary: str, *, requester: str, decider: str) -> Reply:
    icon = "✅" if request.status == "approved" else "❌"
    text = (f"{icon} *Quota request #{request.pk}* from {requester} ({esc(summary)}) was "
            f"{request.get_status_display().lower()} by {decider}.")
    if request.decision_note:
        text += f"\n>{esc(request.decision_note[:500])}"
    return Reply(text=text, blocks=[section(text)])


def quota_request_decided_dm(request, summary: str, *, decider: str) -> Reply:
    if request.status == "approved":
        text = (f"✅ Your quota request #{request.pk} was approved by {decider}: {esc(summary)}. "
                "You can create the VM now.")
    else:
        text = f"❌ Your quota request #{request.pk} ({esc(summary)}) was denied by {decider}."
    if request.decision_note:
        text += f"\n>{esc(request.decision_note[:500])}"
    return Reply(text=text, blocks=[section(text)])


def subscriptions_reply(subs: list, labels: dict[str, str], *, prefix: str = "/vm") -> Reply:
    if not subs:
        return Reply(text=f"No subscriptions. `{prefix} subscribe` sends job results here; "
                          f"`{prefix} subscribe me` by direct message.")
    lines = ["*Your subscriptions*"]
    for s in subs:
        where = "direct messages" if s.is_direct else f"<#{esc(s.channel_id)}>"
        lines.append(f"• {where}: {', '.join(labels.get(e, e) for e in s.events)}")
    return Reply(text="\n".join(lines))


# --- backups (issue #11) ---------------------------------------------------------------------------

A_BACKUP_RESTORE = "vm_backup_restore"  # (bolt routes vm_* action ids)

_DONE.update({
    "backup.create": "💾 *{name}* was backed up.",
    "backup.restore": "♻️ *{name}* was restored from its backup.",
    "backup.delete": "🗑️ A backup of *{name}* was deleted.",
})


def backup_restore_name(backup) -> str:
    """The new VM's name a Restore button uses: the VM's name and the backup's id (`web-1-r42`)."""
    suffix = f"-r{backup.pk}"
    return backup.vm_name[: 63 - len(suffix)].rstrip("-") + suffix


def backup_line(backup) -> str:
    kind = backup.get_kind_display().lower()
    if backup.parent_id:
        kind += f" on #{backup.parent_id}"
    state = backup.get_status_display().lower()
    if backup.status == "running":
        state += f" {backup.progress}%"
    size = filesize(backup.size_bytes) if backup.size_bytes else "—"
    when = backup.created_at
    gone = " _(VM deleted)_" if not backup.vm_id else ""
    return (f"`#{backup.pk}` *{esc(backup.vm_name)}*{gone} · {kind} · {size} · {state} · "
            f"<!date^{int(when.timestamp())}^{{date_short_pretty}} {{time}}|{when:%Y-%m-%d %H:%M} UTC>")


def backup_list_reply(backups: list, *, total: int, vm=None, prefix: str = "/vm") -> Reply:
    """Backups with their sizes; a Restore button (to a new VM, asked first) on each ready one."""
    if not backups:
        text = (f"*{esc(vm.name)}* has no backups. Back it up with `{prefix} backup {esc(vm.name)}`." if vm is not None
                else f"You have no backups. Back a VM up with `{prefix} backup NAME`.")
        return Reply(text=text, blocks=[section(text)])
    title = f"*Backups of {esc(vm.name)}* ({total})" if vm is not None else f"*Your backups* ({total})"
    lines = [title]
    blocks: list[dict[str, Any]] = [section(title)]
    for backup in backups:
        line = backup_line(backup)
        lines.append(line)
        block = section(line)
        if backup.status == "ready":
            new_name = backup_restore_name(backup)
            block["accessory"] = button("Restore", A_BACKUP_RESTORE, str(backup.pk), confirm=confirm_dialog(
                f"Restore backup #{backup.pk}?", f"A new VM {esc(new_name)} is made from backup #{backup.pk} of "
                f"{esc(backup.vm_name)} (it counts against your quota).", "Restore", style="primary"))
        blocks.append(block)
    if total > len(backups):
        more = f"… and {total - len(backups)} more in the portal."
        lines.append(more)
        blocks.append(context(more))
    return Reply(text="\n".join(lines), blocks=blocks[:50])
