"""What an administrator sets on a host, and the rules about it.

- The libvirt URI: only the transports the portal supports (`host_uri_check`, called by host_register).
- Where the host's VNC displays listen and where the console relay dials (`host_display_address`):
  a host is *local* when its URI names no remote machine and no other libvirtd socket
  (`qemu:///system`, `qemu:///session`, `qemu+unix:///system` without `socket=`, `test:///…`).
  Only a local host's displays are reachable at 127.0.0.1 from the portal. A host reached through
  another daemon's socket (the test harness's namespace hosts, a container's libvirtd) is NOT local:
  its QEMU listens on the loopback of another network namespace, where the relay must never dial.
  A non-local host gets a screen console only once an administrator sets its display address,
  which must not be a loopback or wildcard address.
- The other settings (cluster, tags, migration URI, job bound, power agent commands), changed
  through `host_configure`, audited.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.db import transaction

from portal.actors import Actor, require_admin
from portal.audit import audit
from portal.exceptions import ValidationFailed

from .models import Cluster, Host

# --- the libvirt URI ---------------------------------------------------------------------------------

LOCAL_SCHEMES = ("qemu", "qemu+unix", "test")
REMOTE_SCHEMES = ("qemu+ssh", "qemu+libssh", "qemu+libssh2", "qemu+tcp", "qemu+tls")
URI_HELP = ("qemu:///system (this machine); qemu+ssh://root@host/system (SSH keys of the portal's user); "
            "qemu+tcp://host/system (trusted networks only: no encryption, no authentication); "
            "qemu+tls://host/system (certificates); qemu+unix:///system?socket=/path/to/libvirt-sock (another "
            "libvirtd's socket on this machine); test:///default (demo).")


def host_uri_check(uri: str) -> str:
    """The URI, stripped; ValidationFailed (field "uri") for an unknown scheme or a remote one without a host."""
    uri = str(uri or "").strip()
    if not uri:
        raise ValidationFailed("Give the host's libvirt URI, e.g. " + URI_HELP, field="uri")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if "://" not in uri or scheme not in LOCAL_SCHEMES + REMOTE_SCHEMES:
        raise ValidationFailed(f"Unknown libvirt URI scheme {scheme[:30]!r}: use " + URI_HELP, field="uri")
    if scheme in REMOTE_SCHEMES and not parts.hostname:
        raise ValidationFailed(f"A {scheme}:// URI names the remote host, e.g. {scheme}://host/system.",
                               field="uri")
    if scheme.startswith("qemu") and parts.path.rstrip("/") not in ("/system", "/session"):
        raise ValidationFailed("A qemu URI ends in /system (or /session), e.g. qemu+ssh://root@host/system.",
                               field="uri")
    return uri


# --- displays ----------------------------------------------------------------------------------------

WILDCARDS = ("0.0.0.0", "::", "[::]")


def host_is_local(host: Host) -> bool:
    """Does the host's libvirtd run on this machine, in this network namespace (127.0.0.1 is its loopback)?"""
    parts = urlsplit(host.uri)
    if parts.scheme.lower() not in LOCAL_SCHEMES or parts.netloc:
        return False
    return "socket" not in parse_qs(parts.query)


def address_is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 or a localhost name."""
    text = address.strip().strip("[]").lower()
    if text == "localhost" or text.endswith(".localhost") or text == "localhost.localdomain":
        return True
    ip = _ip(text)
    return ip is not None and ip.is_loopback


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address `text` names (an IPv4-mapped IPv6 address as its IPv4 address: ::ffff:127.0.0.1 is
    127.0.0.1 on a dual-stack socket), None for a name."""
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def address_is_wildcard(address: str) -> bool:
    """0.0.0.0, :: (any spelling, IPv4-mapped too)."""
    if address.strip() in WILDCARDS:
        return True
    ip = _ip(address)
    return ip is not None and ip.is_unspecified


def host_display_address(host: Host) -> str | None:
    """The address the host's VNC displays listen on and the relay dials; None: no screen console.

    The host's `display_address`; blank on a local host: PORTAL_GRAPHICS_LISTEN (127.0.0.1).
    """
    if host.display_address.strip():
        return host.display_address.strip()
    if host_is_local(host):
        return str(settings.GRAPHICS_LISTEN or "127.0.0.1")
    return None


def host_graphics_listen(host: Host) -> str:
    """What goes into a VM's domain on this host: its display address, else the host's own loopback
    (a display nobody else can reach; the console says an administrator must set the address)."""
    return host_display_address(host) or "127.0.0.1"


def host_display_address_check(*, host: Host, address: str) -> str:
    """A display address an administrator may set on `host` (stripped); blank clears it."""
    address = str(address or "").strip()
    if not address:
        return ""
    if len(address) > 100 or any(c.isspace() or c in "/?#@'\"<>" for c in address):
        raise ValidationFailed("Give an IP address or host name, e.g. 10.0.0.2.", field="display_address")
    if not host_is_local(host):
        if address_is_loopback(address):
            raise ValidationFailed(
                f"{host.name} is not on this machine: its display address must be one the portal reaches over "
                "the network, never a loopback address (127.0.0.1 would reach this machine's own displays).",
                field="display_address")
        if address_is_wildcard(address):
            raise ValidationFailed(
                "Give the one address the portal dials, not a wildcard (it would expose the displays on every "
                "interface of the host).", field="display_address")
    return address


# --- power agent commands ----------------------------------------------------------------------------

POWER_FIELDS = ("power_on_command", "power_off_command", "power_status_command")


def power_command_check(value: str, *, field: str) -> str:
    """A command line the power agent may run: shell-like quoting, an absolute executable path."""
    value = str(value or "").strip()
    if not value:
        return ""
    try:
        argv = shlex.split(value)
    except ValueError as exc:
        raise ValidationFailed(f"Cannot split this command line: {exc}.", field=field) from None
    if not argv:
        return ""
    if not os.path.isabs(argv[0]):
        raise ValidationFailed(f"Start with the executable's absolute path (e.g. /usr/bin/ipmitool), not "
                               f"{argv[0][:60]!r}: the agent runs no shell and no PATH look-up.", field=field)
    return value


# --- storage paths ---------------------------------------------------------------------------------------

def storage_path_check(path: object, *, field: str = "path") -> str:
    """A directory on a host for a storage pool (`host add --storage-dir`, storage's pool_add): absolute, no
    `..`, no control characters, not `/`; returned normalised (no trailing slash). It lives on the *host*,
    whose file system the portal may not see, so existence is left to libvirt (its pool build makes it)."""
    text = str(path or "").strip()
    if not text or not os.path.isabs(text):
        raise ValidationFailed("Give the absolute path of a directory on the host, e.g. /srv/nfs/vmportal.",
                               field=field)
    if any(ord(c) < 32 or ord(c) == 127 for c in text) or ".." in text.split("/") or len(text) > 400:
        raise ValidationFailed("A storage path has no '..' parts, no control characters and at most 400 "
                               "characters.", field=field)
    norm = os.path.normpath(text)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    if norm == "/":
        raise ValidationFailed("A storage pool cannot be the root directory: give a directory of its own.",
                               field=field)
    return norm


# --- other settings ------------------------------------------------------------------------------------

# Parameters of a libvirt URI that name a program its client runs (the ssh transports' `command`, the
# remote `netcat`): a migration URI is dialled by the *source host's* libvirtd, as root.
MIGRATION_URI_COMMAND_PARAMS = ("command", "netcat")

CONFIG_FIELDS = ("cluster", "tags", "migration_uri", "display_address", "max_jobs", *POWER_FIELDS)


def validate_tags(value: Any, *, field: str = "tags") -> list[str]:
    """Host tags (and the tags a VM requires, vms.scheduling): a list or comma-separated words, each
    letters, digits, - _ . : (at most 50); blanks dropped, duplicates folded, order kept."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)):
        raise ValidationFailed("Tags are a list of words, e.g. ssd,gpu.", field=field)
    out: list[str] = []
    for tag in value:
        tag = str(tag).strip()
        if not tag:
            continue
        if len(tag) > 50 or not all(c.isalnum() or c in "-_.:" for c in tag):
            raise ValidationFailed(f"Tag {tag[:50]!r}: letters, digits, - _ . : only (at most 50).", field=field)
        if tag not in out:
            out.append(tag)
    return out


def host_settings_clean(*, host: Host, changes: dict[str, Any]) -> dict[str, Any]:
    """Validated values for the given settings (all errors at once); unknown names are refused."""
    unknown = set(changes) - set(CONFIG_FIELDS)
    if unknown:
        raise ValidationFailed(f"Unknown host setting(s): {', '.join(sorted(unknown))}.")
    clean: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name, value in changes.items():
        try:
            if name == "cluster":
                clean[name] = _cluster(value)
            elif name == "tags":
                clean[name] = validate_tags(value)
            elif name == "migration_uri":
                text = str(value or "").strip()
                if text:
                    host_uri_check(text)
                    if not urlsplit(text).hostname:
                        raise ValidationFailed("The migration URI is how other hosts reach this one: give a "
                                               "network URI such as qemu+tcp://10.0.0.2/system.")
                    run = sorted(set(parse_qs(urlsplit(text).query)) & set(MIGRATION_URI_COMMAND_PARAMS))
                    if run:
                        raise ValidationFailed(
                            f"The migration URI cannot set {', '.join(run)}: the source host's libvirtd (root) "
                            "would run that program. Install the transport's tools on the hosts instead.")
                clean[name] = text
            elif name == "display_address":
                clean[name] = host_display_address_check(host=host, address=value)
            elif name == "max_jobs":
                try:
                    jobs = int(value)
                except (TypeError, ValueError):
                    jobs = 0
                if not 1 <= jobs <= 64:
                    raise ValidationFailed("Between 1 and 64 jobs at once.")
                clean[name] = jobs
            else:
                clean[name] = power_command_check(value, field=name)
        except ValidationFailed as exc:
            errors.setdefault(name, []).extend(m for msgs in exc.errors.values() for m in msgs)
    if errors:
        raise ValidationFailed(errors)
    return clean


def _cluster(value: Any) -> Cluster:
    if isinstance(value, Cluster):
        return value
    text = str(value or "").strip()
    found = (Cluster.objects.filter(pk=int(text)).first() if (text.isascii() and text.isdigit() and len(text) <= 18)
             else Cluster.objects.filter(name=text).first())
    if found is None:
        raise ValidationFailed(f"No cluster named {text[:60]!r}.")
    return found


def _shown(name: str, value: Any) -> str:
    if name in POWER_FIELDS:
        return "set" if value else "cleared"
    if name == "tags":
        return ",".join(value) or "none"
    return str(value) if value not in ("", None) else "blank"


def host_configure(*, actor: Actor, via: str, host: Host, **changes: Any) -> Host:
    """Change an administrator's settings of a host (see CONFIG_FIELDS); validated, audited (one event).

    A new display address applies to the host's VMs as they are next started (their domains carry it).
    """
    require_admin(actor, "Only administrators change hosts.")
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host.pk)
        clean = host_settings_clean(host=host, changes=changes)
        changed = {k: v for k, v in clean.items()
                   if (host.cluster_id != v.pk if k == "cluster" else getattr(host, k) != v)}
        if not changed:
            return host
        for name, value in changed.items():
            setattr(host, name, value)
        host.save(update_fields=list(changed))
        audit(actor=actor, via=via, action="host.configure", target=host,
              message=f"{host.name}: " + "; ".join(f"{k.replace('_', ' ')} {_shown(k, v)}"
                                                  for k, v in changed.items()),
              data={k: (v.name if k == "cluster" else ("set" if k in POWER_FIELDS and v else v))
                    for k, v in changed.items()})
    return host
