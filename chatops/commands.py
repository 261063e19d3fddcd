"""The `/vm` command language: text in, a typed command out (or a ParseError with a clear message).

The parser only splits words and options; names, sizes and images are validated by the same
services as the web form and the API, so every door gives the same message for the same mistake.
"""

from __future__ import annotations

import html
import re
import shlex
from dataclasses import dataclass, field

from vms import lifecycle

MAX_TEXT = 1000
_LEASE_DAYS = re.compile(r"^\d{1,5}\s*(d|days?)?$", re.IGNORECASE)


class ParseError(Exception):
    """The text is not a command we understand; `message` says what to type instead."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Help:
    topic: str = ""


@dataclass(frozen=True)
class Link:
    pass


@dataclass(frozen=True)
class Unlink:
    """Remove the link of the Slack user who types it (their portal account's consent to a move)."""


@dataclass(frozen=True)
class ListVMs:
    pass


@dataclass(frozen=True)
class Create:
    name: str
    flavor: str | None = None
    image: str | None = None
    vcpus: str | None = None
    memory_mib: str | None = None
    disk_gib: str | None = None
    description: str = ""
    group: str | None = None
    networks: tuple[str, ...] | None = None  # None: the default network; (): no NIC (`--net none`)
    clone: str | None = None  # thin (default) or full: how the disk is made from the image (a template)
    lease: str | None = None  # lease in days ("7d"; "none": no lease); not given: the group's default


@dataclass(frozen=True)
class CreateMany:
    """Several VMs from one image or template (issue #14): names from a pattern such as lab-{n:02}."""

    pattern: str
    count: str
    flavor: str | None = None
    image: str | None = None
    vcpus: str | None = None
    memory_mib: str | None = None
    disk_gib: str | None = None
    description: str = ""
    group: str | None = None
    networks: tuple[str, ...] | None = None
    clone: str | None = None
    start_number: str = "1"
    partial: bool = False
    lease: str | None = None  # each VM's lease, as Create's (`--lease 7d`; "none": no lease)


@dataclass(frozen=True)
class Action:
    """A power action or delete on one VM (the destructive ones are confirmed with buttons first)."""

    action: str  # start, stop, pause, resume, reboot, force_off, delete
    name: str


@dataclass(frozen=True)
class Extend:
    """Move a VM's lease end: by days ("7d"), to a date ("2030-01-31"), or (administrators) "none" to remove it."""

    name: str
    days: str | None = None
    until: str | None = None
    remove: bool = False


@dataclass(frozen=True)
class Console:
    name: str


@dataclass(frozen=True)
class Info:
    """One VM: state, size, NICs with their addresses, and the ssh line."""

    name: str


@dataclass(frozen=True)
class Networks:
    """The networks the caller may put VMs on (the default one marked)."""


@dataclass(frozen=True)
class Images:
    """The images the caller may create VMs from (disk images, ISOs, templates), optionally one kind."""

    kind: str = ""


@dataclass(frozen=True)
class GrowDisk:
    name: str
    disk_gib: str


@dataclass(frozen=True)
class TakeSnapshot:
    name: str
    snapshot: str | None = None
    description: str = ""


@dataclass(frozen=True)
class ListSnapshots:
    name: str


@dataclass(frozen=True)
class Revert:
    """Revert a VM to one of its snapshots (asks for confirmation with buttons first)."""

    name: str
    snapshot: str


@dataclass(frozen=True)
class Migrate:
    """Administrators: live-migrate a VM to a host, or (no host) to the best host of its cluster."""

    name: str
    host: str | None = None


@dataclass(frozen=True)
class Quota:
    pass


@dataclass(frozen=True)
class QuotaRequest:
    max_vms: str | None = None
    max_vcpus: str | None = None
    max_memory_mib: str | None = None
    max_disk_gib: str | None = None
    reason: str = ""
    max_backup_gib: str | None = None  # backup space (issue #11)


@dataclass(frozen=True)
class Hosts:
    pass


@dataclass(frozen=True)
class ListKeys:
    """The caller's SSH public keys (read-only: keys are added in the portal, never pasted in chat)."""


@dataclass(frozen=True)
class Subscribe:
    where: str  # "here" (this channel) or "me" (direct messages)
    events: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Unsubscribe:
    where: str


@dataclass(frozen=True)
class Subscriptions:
    pass


# --- backups (issue #11) ---
@dataclass(frozen=True)
class TakeBackup:
    """Back a VM up: kind auto (incremental when possible, else full), full or incremental."""

    name: str
    kind: str = "auto"


@dataclass(frozen=True)
class ListBackups:
    """The caller's backups (also of deleted VMs), or one VM's."""

    name: str | None = None


@dataclass(frozen=True)
class RestoreBackup:
    """Restore a backup (its chain) to a new VM."""

    backup: str
    name: str


BACKUP_KINDS = {"auto": "auto", "full": "full", "incremental": "incremental", "incr": "incremental",
                "inc": "incremental"}
# --- end backups ---


Command = (Help | Link | Unlink | ListVMs | Create | CreateMany | Action | Console | Info | Networks | Images | Quota | QuotaRequest | Hosts
           | Subscribe | Unsubscribe | Subscriptions | TakeSnapshot | ListSnapshots | Revert | GrowDisk | ListKeys | Migrate
           | TakeBackup | ListBackups | RestoreBackup | Extend)

# The VM actions, as the lifecycle table names them (force_off also as force-off), and a few aliases.
ACTION_ALIASES = {"unpause": "resume", "restart": "reboot", "forceoff": "force_off", "rm": "delete"}
ACTION_VERBS = {
    **{name: name for name in lifecycle.ACTIONS},
    **{name.replace("_", "-"): name for name in lifecycle.ACTIONS},
    **ACTION_ALIASES,
}
# Actions that ask "are you sure?" with buttons before anything happens: those the table gives a confirmation.
CONFIRMED_ACTIONS = tuple(name for name, t in lifecycle.ACTIONS.items() if t.confirm)

CREATE_OPTIONS = {
    "flavor": "flavor", "size": "flavor",
    "image": "image",
    "cpus": "vcpus", "vcpus": "vcpus", "cpu": "vcpus",
    "memory": "memory_mib", "mem": "memory_mib", "ram": "memory_mib",
    "disk": "disk_gib",
    "description": "description", "desc": "description",
    "group": "group", "team": "group",
    "net": "networks", "nets": "networks", "network": "networks", "networks": "networks",
    "clone": "clone",
    "lease": "lease", "expires": "lease",
}
CREATE_MANY_OPTIONS = {**CREATE_OPTIONS, "start": "start_number", "from": "start_number", "partial": "partial"}
QUOTA_OPTIONS = {
    "vms": "max_vms",
    "cpus": "max_vcpus", "vcpus": "max_vcpus",
    "memory": "max_memory_mib", "mem": "max_memory_mib", "ram": "max_memory_mib",
    "disk": "max_disk_gib",
    "backup": "max_backup_gib", "backups": "max_backup_gib",  # backup space (issue #11)
    "reason": "reason",
}
EVENT_ALIASES = {
    "jobs": ("job.succeeded", "job.failed"),
    "job": ("job.succeeded", "job.failed"),
    "failures": ("job.failed",),
    "failed": ("job.failed",),
    "vm-state": ("vm.state",),
    "state": ("vm.state",),
    "drift": ("vm.state",),
    "host-down": ("host.down",),
    "hosts": ("host.down",),
    "all": ("job.succeeded", "job.failed", "vm.state", "host.down"),
}
DEFAULT_EVENTS = ("job.succeeded", "job.failed", "vm.state")

# `/vm images KIND` (storage.models.Image.Kind values, and plurals).
IMAGE_KINDS = {"disk": "disk", "disks": "disk", "iso": "iso", "isos": "iso",
               "template": "template", "templates": "template"}

# Typographic quotes that Slack clients put in for straight ones.
_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'"})


def _short(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _words(text: str) -> list[str]:
    # Slack escapes &, < and > in command text; undo it so messages quote what the user typed.
    text = html.unescape(text).translate(_QUOTES)
    try:
        return shlex.split(text)
    except ValueError as exc:  # "No closing quotation"
        raise ParseError(f"Could not read the command: {str(exc).lower()}.") from None


def _options(words: list[str], known: dict[str, str], verb: str) -> tuple[list[str], dict[str, str]]:
    """Split `--key value` / `--key=value` options from positional words; a known option also as a bare
    `key=value` word (`create web-1 image=web-template clone=full`: no VM name holds "=")."""
    positional: list[str] = []
    options: dict[str, str] = {}
    i = 0
    while i < len(words):
        word = words[i]
        bare_key, bare_eq, bare_value = word.partition("=")
        if not word.startswith("-") and bare_eq and bare_key.lower() in known:
            options[known[bare_key.lower()]] = bare_value
        elif word.startswith("--") and len(word) > 2:
            key, eq, value = word[2:].partition("=")
            key = key.lower()
            if key not in known:
                names = ", ".join(f"--{k}" for k in dict.fromkeys(known))
                raise ParseError(f"Unknown option --{_short(key, 30)} for {verb} (known: {names}).")
            if not eq:
                if i + 1 >= len(words):
                    raise ParseError(f"Option --{key} needs a value.")
                i += 1
                value = words[i]
            options[known[key]] = value
        else:
            positional.append(word)
        i += 1
    return positional, options


def _networks(value: str | None, prefix: str) -> tuple[str, ...] | None:
    """`--net a,b` → ("a", "b"); `--net none` → () (no NIC); not given → None (the default network)."""
    if value is None:
        return None
    names = [name.strip() for name in value.split(",")]
    if not all(names):
        raise ParseError(f"Give network names separated by commas, e.g. `{prefix} create web-1 --net lan,lab` "
                         f"(`{prefix} networks` lists yours).")
    if [n.lower() for n in names] == ["none"]:
        return ()
    if any(n.lower() == "none" for n in names):
        raise ParseError("`--net none` means no NIC at all: give it alone.")
    return tuple(names)


def _one_name(verb: str, positional: list[str], prefix: str) -> str:
    if not positional:
        raise ParseError(f"Which VM? Type `{prefix} {verb} NAME`.")
    if len(positional) > 1:
        raise ParseError(f"Unexpected argument {_short(positional[1])!r}: `{prefix} {verb}` takes one VM name.")
    return positional[0]


def parse(text: str, *, prefix: str = "/vm") -> Command:
    """Turn the text after `/vm` into a typed command."""
    text = (text or "").strip()
    if len(text) > MAX_TEXT:
        raise ParseError(f"That command is too long ({len(text)} characters; at most {MAX_TEXT}).")
    words = _words(text)
    if not words:
        return Help()
    verb, rest = words[0].lower(), words[1:]
    if verb in ("help", "-h", "--help", "?"):
        return Help(topic=rest[0].lower() if rest else "")
    if verb == "link":
        return Link()
    if verb == "unlink":
        if rest:
            raise ParseError(f"`{prefix} unlink` takes no arguments: it unlinks your own Slack account.")
        return Unlink()
    if verb in ("list", "ls"):
        if rest:
            raise ParseError(f"`{prefix} list` takes no arguments.")
        return ListVMs()
    if verb in ("create", "new"):
        positional, options = _options(rest, CREATE_OPTIONS, "create")
        name = _one_name("create", positional, prefix)
        networks = _networks(options.pop("networks", None), prefix)
        return Create(name=name, networks=networks, **options)
    if verb in ("create-many", "bulk-create", "create-several"):
        positional, options = _options(rest, CREATE_MANY_OPTIONS, "create-many")
        if len(positional) != 2:
            raise ParseError(f"Type `{prefix} create-many PATTERN COUNT --image IMAGE`, e.g. "
                             f"`{prefix} create-many lab-{{n:02}} 20 --image lab-template` ({{n}} is each VM's number).")
        networks = _networks(options.pop("networks", None), prefix)
        partial = options.pop("partial", None)
        if partial is not None and partial.lower() not in ("yes", "no", "true", "false", "1", "0"):
            raise ParseError("`--partial yes` creates as many as fit your quota; `--partial no` (the default): all "
                             "or nothing.")
        return CreateMany(pattern=positional[0], count=positional[1], networks=networks,
                          partial=(partial or "no").lower() in ("yes", "true", "1"), **options)
    if verb in ACTION_VERBS:
        positional, _ = _options(rest, {}, verb)
        return Action(action=ACTION_VERBS[verb], name=_one_name(verb, positional, prefix))
    if verb in ("extend", "renew", "lease"):
        positional, _ = _options(rest, {}, verb)
        if len(positional) != 2:
            raise ParseError(f"Type `{prefix} extend NAME 7d` (days more) or `{prefix} extend NAME 2030-01-31` "
                             "(the new end).")
        name, amount = positional[0], positional[1].strip()
        if amount.lower() in ("none", "never"):
            return Extend(name=name, remove=True)
        if _LEASE_DAYS.match(amount):
            return Extend(name=name, days=amount)
        return Extend(name=name, until=amount)
    if verb == "console":
        positional, _ = _options(rest, {}, verb)
        return Console(name=_one_name("console", positional, prefix))
    if verb in ("info", "show"):
        positional, _ = _options(rest, {}, verb)
        return Info(name=_one_name(verb, positional, prefix))
    if verb in ("networks", "nets"):
        if rest:
            raise ParseError(f"`{prefix} networks` takes no arguments.")
        return Networks()
    if verb in ("images", "image", "imgs"):
        if len(rest) > 1 or (rest and rest[0].lower() not in IMAGE_KINDS):
            raise ParseError(f"Type `{prefix} images` for all the images you can use, or "
                             f"`{prefix} images disk|iso|template` for one kind.")
        return Images(kind=IMAGE_KINDS[rest[0].lower()] if rest else "")
    if verb == "quota":
        if rest and rest[0].lower() == "request":
            positional, options = _options(rest[1:], QUOTA_OPTIONS, "quota request")
            reason = " ".join([*positional, options.pop("reason", "")]).strip()
            if not options:
                raise ParseError(f"Say what you need, e.g. `{prefix} quota request --vms 5 --memory 4096 for the demo`.")
            return QuotaRequest(reason=reason, **options)
        if rest:
            raise ParseError(f"Type `{prefix} quota` to see your usage, or `{prefix} quota request --vms N ...` for more.")
        return Quota()
    if verb == "hosts":
        return Hosts()
    if verb in ("keys", "ssh-keys"):
        if rest:
            # Adding keys from Slack is deliberately not offered: what is pasted stays in the chat's history.
            raise ParseError(f"`{prefix} keys` only lists your SSH keys. Add or delete keys in the portal, "
                             "on the SSH keys page of your account menu.")
        return ListKeys()
    if verb in ("subscribe", "unsubscribe"):
        where = "here"
        if rest and rest[0].lower() in ("here", "me"):
            where, rest = rest[0].lower(), rest[1:]
        if verb == "unsubscribe":
            if rest:
                raise ParseError(f"Type `{prefix} unsubscribe` (this channel) or `{prefix} unsubscribe me` (direct messages).")
            return Unsubscribe(where=where)
        events: list[str] = []
        for word in rest:
            found = EVENT_ALIASES.get(word.lower())
            if found is None:
                raise ParseError(f"Unknown event {_short(word)!r} (known: {', '.join(EVENT_ALIASES)}).")
            events.extend(found)
        return Subscribe(where=where, events=tuple(dict.fromkeys(events or DEFAULT_EVENTS)))
    if verb in ("subscriptions", "subs"):
        return Subscriptions()
    if verb in ("grow-disk", "grow"):
        positional, _ = _options(rest, {}, verb)
        if len(positional) != 2:
            raise ParseError(f"Type `{prefix} grow-disk NAME GiB`, e.g. `{prefix} grow-disk web-1 20`.")
        return GrowDisk(name=positional[0], disk_gib=positional[1])
    if verb in ("snapshot", "snap"):
        positional, options = _options(rest, {"description": "description", "desc": "description"}, verb)
        if not positional:
            raise ParseError(f"Which VM? Type `{prefix} snapshot NAME [SNAPSHOT-NAME]`.")
        if len(positional) > 2:
            raise ParseError(f"Unexpected argument {_short(positional[2])!r}: "
                             f"`{prefix} snapshot` takes a VM name and an optional snapshot name.")
        return TakeSnapshot(name=positional[0], snapshot=positional[1] if len(positional) > 1 else None,
                            description=options.get("description", ""))
    if verb in ("snapshots", "snaps"):
        positional, _ = _options(rest, {}, verb)
        return ListSnapshots(name=_one_name("snapshots", positional, prefix))
    if verb in ("migrate", "move"):
        positional, _ = _options(rest, {}, verb)
        if not 1 <= len(positional) <= 2:
            raise ParseError(f"Type `{prefix} migrate NAME [HOST]` (no host: the best host of its cluster).")
        return Migrate(name=positional[0], host=positional[1] if len(positional) > 1 else None)
    if verb == "revert":
        positional, _ = _options(rest, {}, verb)
        if len(positional) != 2:
            raise ParseError(f"Type `{prefix} revert NAME SNAPSHOT-NAME` "
                             f"(`{prefix} snapshots NAME` lists them).")
        return Revert(name=positional[0], snapshot=positional[1])
    # --- backups (issue #11) ---
    if verb == "backup":
        positional, _ = _options(rest, {}, verb)
        if not 1 <= len(positional) <= 2 or (len(positional) == 2 and positional[1].lower() not in BACKUP_KINDS):
            raise ParseError(f"Type `{prefix} backup NAME [full|incremental]` (default: incremental when "
                             "possible, else full).")
        kind = BACKUP_KINDS[positional[1].lower()] if len(positional) == 2 else "auto"
        return TakeBackup(name=positional[0], kind=kind)
    if verb == "backups":
        positional, _ = _options(rest, {}, verb)
        if len(positional) > 1:
            raise ParseError(f"Type `{prefix} backups` for all your backups, or `{prefix} backups NAME` for one VM's.")
        return ListBackups(name=positional[0] if positional else None)
    if verb == "restore":
        positional, _ = _options(rest, {}, verb)
        if len(positional) != 2:
            raise ParseError(f"Type `{prefix} restore BACKUP-ID NEW-NAME` (`{prefix} backups` lists them with "
                             "their ids).")
        return RestoreBackup(backup=positional[0].lstrip("#"), name=positional[1])
    raise ParseError(f"Unknown command {_short(verb, 30)!r}. Type `{prefix} help` for the list.")
