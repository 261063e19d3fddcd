"""Every rule about consoles: tickets, who may connect, serial privacy, share links, session audit.

Both relays (consoles.consumers on Channels, consoles.websockify on the proxy tier) are thin: they
parse the connection, call `console_ticket_redeem`, then `console_session_check` every few seconds
and `console_session_close` at the end. The VNC endpoint always comes from libvirt's live XML of
the ticket's VM, never from anything the browser sent.
"""

from __future__ import annotations

import logging
import math
import secrets
import socket
import string
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import import_module
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import F, QuerySet
from django.urls import reverse
from django.utils import timezone

from cluster.hostconfig import address_is_loopback, address_is_wildcard, host_display_address, host_is_local
from cluster.models import Host
from portal.actors import Actor, require_user
from portal.audit import audit
from portal.choices import Via
from portal.exceptions import Gone, NotFound, PermissionDenied, PortalError, ValidationFailed
from portal.hypervisor import get_driver
from portal.models import AuditEvent
from portal.tokens import new_token, token_hash
from vms.choices import VMStatus
from vms.models import VM
from vms.selectors import vm_visible
from vms.services import vm_require_host_reachable

if TYPE_CHECKING:  # the stream class lives in the gateway driver, which loads libvirt
    from portal.hypervisor.driver import ConsoleStream

from .choices import ConsoleKind, SerialSharing, SessionRole
from .exceptions import (
    ConsoleBusy,
    ConsoleForbidden,
    ConsoleRateLimited,
    ConsoleSessionLimit,
    ConsoleUnavailable,
    ConsoleVMNotRunning,
    SessionEnded,
    TicketExpired,
    TicketMissing,
    TicketUnknown,
    TicketUsed,
)
from .models import ConsoleLink, ConsoleSession, ConsoleSettings, ConsoleShare, ConsoleTicket

log = logging.getLogger(__name__)

# A console stays usable while the guest runs, and through a reboot or an ACPI stop (people watch those).
CONSOLE_STATES = (VMStatus.RUNNING, VMStatus.PAUSED, VMStatus.REBOOTING, VMStatus.STOPPING)
_PASSWORD_ALPHABET = string.ascii_letters + string.digits



def _kind(kind: str) -> str:
    if kind not in ConsoleKind.values:
        raise ValidationFailed(f"Unknown console kind {str(kind)[:20]!r} (screen or serial).", field="kind")
    return kind


def _human_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m"


# --- per-VM settings ------------------------------------------------------------------------------

def console_settings_for(*, vm: VM) -> ConsoleSettings:
    """The VM's console settings, created with a fresh random VNC password on first use."""
    found = ConsoleSettings.objects.filter(vm=vm).first()
    if found:
        return found
    password = "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(8))
    obj, _ = ConsoleSettings.objects.get_or_create(vm=vm, defaults={"vnc_password": password})
    return obj


def console_graphics_password(vm: VM) -> str:
    """The per-domain VNC password written into the domain XML."""
    return console_settings_for(vm=vm).vnc_password


def console_domain_spec(vm: VM) -> dict[str, str]:
    """The console's part of a VM's domain (registered with vms.specs): the display's password."""
    return {"graphics_password": console_graphics_password(vm)}


def console_settings_update(*, actor: Actor, via: str, vm: VM, serial_sharing: str) -> ConsoleSettings:
    """The owner (or staff) chooses whether a second serial viewer is refused or may watch."""
    actor = require_user(actor, "Sign in to use consoles.")
    vm = _visible_vm(actor=actor, vm=vm)
    if not (actor.is_staff or vm.owner_id == actor.pk):
        raise PermissionDenied(f"Only the owner of {vm.name} can change who may watch its terminal.")
    if serial_sharing not in SerialSharing.values:
        raise ValidationFailed(f"Unknown choice {str(serial_sharing)[:20]!r} (refuse or read_only).",
                               field="serial_sharing")
    with transaction.atomic():
        obj = console_settings_for(vm=vm)
        if obj.serial_sharing != serial_sharing:
            obj.serial_sharing = serial_sharing
            obj.save(update_fields=["serial_sharing", "updated_at"])
            audit(actor=actor, via=via, action="console.settings", target=vm,
                  message=f"Second terminal viewers of {vm.name}: {SerialSharing(serial_sharing).label.lower()}")
    return obj


def _visible_vm(*, actor: Actor, vm: VM | int) -> VM:
    actor = require_user(actor, "Sign in to use consoles.")
    pk = vm.pk if isinstance(vm, VM) else vm
    found = vm_visible(user=actor).filter(pk=pk).first()
    if found is None:
        raise NotFound(f"VM {pk} not found.")
    return found


def _check_console_possible(vm: VM, kind: str) -> None:
    vm_require_host_reachable(vm)  # a host that does not answer is not dialled (409, its VMs are unknown)
    if vm.status not in CONSOLE_STATES:
        raise ConsoleVMNotRunning(
            f"{vm.name} is {vm.get_status_display().lower()}: start it to use the console.", status=vm.status)
    caps = get_driver(vm.host.uri).capabilities()
    if not (caps.graphics if kind == ConsoleKind.SCREEN else caps.console):
        raise ConsoleUnavailable(f"Consoles are not available for VMs on {vm.host.name}: its hypervisor driver has none.")
    reason = screen_unavailable_reason(vm) if kind == ConsoleKind.SCREEN else None
    if reason:
        raise ConsoleUnavailable(reason)


# --- limits per user -------------------------------------------------------------------------------

_RATE_PERIODS = {"s": (1, "second"), "m": (60, "minute"), "h": (3600, "hour"), "d": (86400, "day")}


def console_ticket_rate() -> tuple[int, int, str] | None:
    """CONSOLE_TICKET_RATE as (requests, period seconds, period name), or None for no cap."""
    raw = str(settings.CONSOLE_TICKET_RATE or "").strip()
    if not raw or raw == "0":
        return None
    count, _, period = raw.partition("/")
    try:
        limit = int(count)
        seconds, name = _RATE_PERIODS[period.strip()[:1].lower()]
    except (ValueError, KeyError):
        raise ImproperlyConfigured(
            f"PORTAL_CONSOLE_TICKET_RATE must look like 30/minute (got {raw!r}).") from None
    return (limit, seconds, name) if limit > 0 else None


def console_rate_check(*, user: User) -> None:
    """Count one console ticket or link request of `user`; ConsoleRateLimited beyond CONSOLE_TICKET_RATE.

    A fixed window in Django's cache: cheap enough to run before anything touches a hypervisor.
    """
    rate = console_ticket_rate()
    if rate is None:
        return
    limit, period, name = rate
    now = time.time()
    window = int(now // period)
    key = f"consoles:ticket-rate:{user.pk}:{period}:{window}"
    cache.add(key, 0, timeout=period + 1)
    try:
        count = cache.incr(key)
    except ValueError:  # the key expired (or was evicted) between add and incr
        cache.set(key, 1, timeout=period + 1)
        count = 1
    if count > limit:
        retry_after = max(1, math.ceil((window + 1) * period - now))
        raise ConsoleRateLimited(
            f"Too many console requests: at most {limit} a {name}. Try again in {retry_after} s.",
            retry_after=retry_after)


def _stale_seconds() -> int:
    return 3 * max(1, settings.CONSOLE_POLL_SECONDS) + 5


def console_sessions_open() -> QuerySet[ConsoleSession]:
    """Console sessions open now: not closed, not asked to end, and their relay checked in lately (a relay
    that died stops counting after a few poll intervals). The session limit and /metrics count these."""
    return ConsoleSession.objects.filter(closed_at__isnull=True, terminate_requested_at__isnull=True,
                                         last_seen_at__gte=_stale_before())


def console_open_session_count(*, user: User) -> int:
    """Consoles `user` has open now."""
    return console_sessions_open().filter(user=user).count()


def _check_session_limit(*, user: User) -> None:
    """ConsoleSessionLimit when `user` already has CONSOLE_MAX_SESSIONS_PER_USER consoles open."""
    limit = int(settings.CONSOLE_MAX_SESSIONS_PER_USER)
    if limit <= 0:
        return
    count = console_open_session_count(user=user)
    if count >= limit:
        raise ConsoleSessionLimit(
            f"You have {count} consoles open, the most allowed at once: close one to open another.",
            limit=limit, retry_after=_stale_seconds())


# --- tickets --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class IssuedTicket:
    """A fresh ticket: the plain token goes to the browser once, the database keeps its hash."""

    token: str
    vm_id: int
    kind: str
    view_only: bool
    expires_at: object
    ttl_seconds: int


def console_ticket_issue(*, actor: Actor, via: str, vm: VM | int, kind: str, session_key: str,
                         share: ConsoleShare | None = None) -> IssuedTicket:
    """A single-use ticket, valid for CONSOLE_TICKET_SECONDS (≤ 60 s), bound to user, VM, kind and session."""
    actor = require_user(actor, "Sign in to use consoles.")
    kind = _kind(kind)
    if share is not None:
        share = _usable_share(actor=actor, share=share)
        if kind != ConsoleKind.SCREEN:
            raise PermissionDenied("Share links show the screen only.")
        vm = VM.objects.select_related("host").get(pk=share.vm_id)
    else:
        vm = _visible_vm(actor=actor, vm=vm)
    console_rate_check(user=actor)  # counts refused requests too: reconnect storms are what it stops
    if not session_key:
        raise PermissionDenied("Sign in to use consoles.")
    _check_console_possible(vm, kind)
    _check_session_limit(user=actor)  # early and friendly; console_ticket_redeem enforces it
    ttl = max(1, min(int(settings.CONSOLE_TICKET_SECONDS), 60))
    console_tickets_purge()  # spent tickets are worthless after a day; the sessions keep the record
    token = new_token(32)
    expires_at = timezone.now() + timedelta(seconds=ttl)
    ConsoleTicket.objects.create(
        token_hash=token_hash(token), user=actor, vm=vm, kind=kind, session_key=session_key, share=share,
        view_only=share is not None, via=via, expires_at=expires_at)
    return IssuedTicket(token=token, vm_id=vm.pk, kind=kind, view_only=share is not None,
                        expires_at=expires_at, ttl_seconds=ttl)


_WEB_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_key(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with ws/wss read as http/https and default ports filled in; None if malformed."""
    scheme = _WEB_SCHEMES.get((scheme or "").strip().lower(), "")
    if not scheme or not netloc or "@" in netloc:
        return None
    parts = urlsplit(f"//{netloc.strip()}")
    try:
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def _origin_of(url: str) -> tuple[str, str, int] | None:
    """The (scheme, host, port) of an Origin header or a configured origin; None for anything else."""
    parts = urlsplit((url or "").strip())
    if parts.scheme.lower() not in {"http", "https"} or parts.path not in {"", "/"}:
        return None
    if parts.query or parts.fragment:
        return None
    return _origin_key(parts.scheme, parts.netloc)


def console_request_scheme(*, transport_scheme: str | None, headers: dict[str, str]) -> str:
    """The scheme the browser used: the connection's own, or https if Django's SECURE_PROXY_SSL_HEADER says so.

    `headers` are lower-cased header names. (daphne puts no scheme in a websocket's scope, so a
    portal behind a TLS proxy relies on that setting or on PORTAL_CONSOLE_ALLOWED_ORIGINS.)
    """
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name, secure_value = proxy_header
        name = name.removeprefix("HTTP_").replace("_", "-").lower()
        if headers.get(name, "").split(",")[0].strip() == secure_value:
            return "https"
    return _WEB_SCHEMES.get((transport_scheme or "ws").lower(), "http")


def console_origin_allowed(*, origin: str | None, host: str | None, scheme: str | None) -> bool:
    """Same origin as the request (scheme, host and port, default ports normalised), or one of
    CONSOLE_ALLOWED_ORIGINS; no Origin at all is refused. `scheme` is the request's (http/ws or https/wss)."""
    if not origin:
        return False
    key = _origin_of(origin)
    if key is None:
        return False
    if key in {_origin_of(o) for o in settings.CONSOLE_ALLOWED_ORIGINS if o.strip()}:
        return True
    if not host or not scheme:
        return False
    return key == _origin_key(scheme, host)


@dataclass(frozen=True)
class ConsoleGrant:
    """What a relay may do after a successful redemption."""

    session_id: int
    vm_id: int
    vm_name: str
    user_id: int
    username: str
    kind: str
    role: str
    view_only: bool
    # screen: where the VNC server listens (from libvirt's live XML) and its password
    target_host: str | None = None
    target_port: int | None = None
    vnc_password: str | None = None

    @property
    def read_only(self) -> bool:
        return self.view_only or self.role == SessionRole.WATCH


def _session_user_id(session_key: str) -> str | None:
    """The user id stored in a Django session, or None if the session is gone (signed out)."""
    engine = import_module(settings.SESSION_ENGINE)
    store = engine.SessionStore(session_key)
    if not store.exists(session_key):
        return None
    return store.get("_auth_user_id")


def _deny(ticket: ConsoleTicket, exc: PortalError, tier: str) -> PortalError:
    audit(actor=ticket.user, via=Via.CONSOLE, action="console.open", target=ticket.vm,
          outcome=AuditEvent.Outcome.DENIED, message=exc.message,
          data={"kind": ticket.kind, "tier": tier, "code": exc.code})
    return exc


def console_ticket_redeem(*, token: str | None, vm_id: int | str, kind: str, session_key: str | None,
                          origin: str | None, host: str | None, scheme: str | None, tier: str,
                          user_id: int | None = None, client: str = "") -> ConsoleGrant:
    """Check and consume a ticket, open a ConsoleSession and audit it; raises a ConsoleRefused subclass.

    Order: Origin, ticket present and known, same VM and kind, same browser session, unused,
    unexpired; the ticket is then spent whatever follows; then the user (or share) must still be
    allowed and the VM running. For the serial console, a second viewer is refused or made a
    read-only watcher, by the owner's choice.
    """
    if not console_origin_allowed(origin=origin, host=host, scheme=scheme):
        raise ConsoleForbidden(f"Origin {str(origin)[:60]!r} may not open consoles.")
    if not token:
        raise TicketMissing("No console ticket: open the console from the VM's page.")
    ticket = ConsoleTicket.objects.select_related("user", "vm", "vm__host", "share", "share__vm").filter(
        token_hash=token_hash(token)).first()
    if ticket is None:
        raise TicketUnknown("Unknown console ticket.")
    if str(ticket.vm_id) != str(vm_id) or ticket.kind != kind:
        raise _deny(ticket, ConsoleForbidden("This ticket is for another console."), tier)
    if (not session_key or not secrets.compare_digest(ticket.session_key, session_key)
            or (user_id is not None and user_id != ticket.user_id)):
        raise _deny(ticket, ConsoleForbidden("This ticket was issued to another browser session."), tier)
    if ticket.used_at is not None:
        raise _deny(ticket, TicketUsed("This console ticket was already used: reconnect from the page."), tier)
    now = timezone.now()
    if ticket.expires_at <= now:
        raise _deny(ticket, TicketExpired("This console ticket expired: reconnect from the page."), tier)
    # Spend it atomically: of two racing connections, exactly one wins.
    if not ConsoleTicket.objects.filter(pk=ticket.pk, used_at__isnull=True).update(used_at=now):
        raise _deny(ticket, TicketUsed("This console ticket was already used: reconnect from the page."), tier)
    if _session_user_id(session_key) != str(ticket.user_id):
        raise _deny(ticket, ConsoleForbidden("You signed out: sign in again to use the console."), tier)
    try:
        _check_access(user=ticket.user, vm_id=ticket.vm_id, share=ticket.share)
        vm = VM.objects.select_related("host").get(pk=ticket.vm_id)
        _check_running(vm)
    except PortalError as exc:
        raise _deny(ticket, exc, tier) from None

    target_host = target_port = password = None
    if kind == ConsoleKind.SCREEN:
        try:
            target_host, target_port, password = console_screen_target(vm)
        except ConsoleUnavailable as exc:  # no route to this host's displays: a refusal, audited
            raise _deny(ticket, exc, tier) from None

    try:
        with transaction.atomic():
            # Racing openers of one user queue on their user row, so the cap holds on PostgreSQL too.
            get_user_model().objects.select_for_update().filter(pk=ticket.user_id).first()
            _check_session_limit(user=ticket.user)
            session = _session_open(ticket=ticket, vm=vm, kind=kind, tier=tier, client=client, now=now)
    except ConsoleSessionLimit as exc:
        raise _deny(ticket, exc, tier) from None
    return ConsoleGrant(
        session_id=session.pk, vm_id=vm.pk, vm_name=vm.name, user_id=ticket.user_id,
        username=ticket.user.get_username(), kind=kind, role=session.role, view_only=ticket.view_only,
        target_host=target_host, target_port=target_port, vnc_password=password)


def _session_open(*, ticket: ConsoleTicket, vm: VM, kind: str, tier: str, client: str,
                  now: datetime) -> ConsoleSession:
    """The session row and its audit event, in the caller's transaction; ConsoleBusy for a taken terminal."""
    role: str = SessionRole.WATCH if ticket.view_only else SessionRole.CONTROL
    if kind == ConsoleKind.SERIAL:
        role = _serial_role(vm=vm, user=ticket.user)
    session = ConsoleSession.objects.create(
        ticket=ticket, user=ticket.user, vm=vm, kind=kind, tier=tier, role=role, share=ticket.share,
        client=client[:100])
    if ticket.share_id:
        ConsoleShare.objects.filter(pk=ticket.share_id).update(last_used_at=now, use_count=F("use_count") + 1)
    extra = " (view-only share link)" if ticket.share_id else (
        " (read-only watcher)" if role == SessionRole.WATCH else "")
    audit(actor=ticket.user, via=Via.CONSOLE, action="console.open", target=vm,
          message=f"Opened the {ConsoleKind(kind).label.lower()} of {vm.name} via {tier}{extra}",
          data={"kind": kind, "tier": tier, "session": session.pk, "role": role,
                "share": ticket.share_id, "client": client[:100]})
    return session


def _check_access(*, user: User, vm_id: int, share: ConsoleShare | None) -> None:
    if not user.is_active:
        raise ConsoleForbidden("Your account is deactivated.")
    if share is not None:
        if share.vm_gone:
            raise ConsoleForbidden(SHARE_ENDED_MESSAGE)
        if share.revoked_at is not None:
            raise ConsoleForbidden("The share link was revoked by its owner.")
        if share.expires_at <= timezone.now():
            raise ConsoleForbidden("The share link expired.")
        if share.recipient_id != user.pk:
            raise ConsoleForbidden("This share link is for someone else.")
        if not share.created_by.is_active or not vm_visible(user=share.created_by).filter(pk=vm_id).exists():
            raise ConsoleForbidden("The person who shared this console no longer has access to it.")
        return
    if not vm_visible(user=user).filter(pk=vm_id).exists():
        raise ConsoleForbidden("You no longer have access to this VM.")


def _check_running(vm: VM) -> None:
    if vm.status not in CONSOLE_STATES:
        raise ConsoleVMNotRunning(f"{vm.name} is {vm.get_status_display().lower()}: the console is closed.",
                                  status=vm.status)


def screen_unavailable_reason(vm: VM) -> str | None:
    """Why the VM's host offers no screen console (no display address the relay may dial), or None."""
    if host_display_address(vm.host) is None:
        return (f"The screen console is not available for VMs on host {vm.host.name}: an administrator must "
                "set its display address.")
    return None


def console_screen_target(vm: VM) -> tuple[str, int, str | None]:
    """Where the relay dials for the VM's screen: (address, port, VNC password). Raises ConsoleRefused.

    The address is the host's display address (cluster.hostconfig.host_display_address), never a
    loopback address for a host that is not this machine; the port and password come from the live
    XML of this domain (by UUID) on this VM's host, whose listen address must be that display
    address (a domain defined with another one is refused, not dialled). Nothing from the browser.
    """
    host = vm.host
    reason = screen_unavailable_reason(vm)
    if reason:
        raise ConsoleUnavailable(reason)
    expected = host_display_address(host) or ""
    endpoint = get_driver(host.uri).graphics_endpoint(str(vm.uuid), secure=True)
    if endpoint is None:
        raise ConsoleVMNotRunning(f"{vm.name} stopped: it has no display right now.")
    listen, port, password = endpoint
    if listen.strip() != expected:
        log.warning("console of %s refused: its display listens on %r, host %s's display address is %r",
                    vm.name, listen, host.name, expected)
        raise ConsoleUnavailable(f"The display of {vm.name} does not listen on its host's display address: "
                                 "stop and start the VM to apply it.")
    return _dial_address(host=host, address=expected), port, password


def _dial_address(*, host: Host, address: str) -> str:
    """The IP address to dial for `address`: a wildcard on this machine is its loopback; for any other
    host the name is resolved once here and refused if it leads to a loopback or wildcard address."""
    local = host_is_local(host)
    if address_is_wildcard(address):
        if local:
            return "127.0.0.1"
        raise ConsoleUnavailable(f"The screen console is not available for VMs on host {host.name}: its display "
                                 "address is a wildcard; an administrator must set the address to dial.")
    if local:
        return address
    try:
        infos = socket.getaddrinfo(address.strip("[]"), None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):  # the address is the administrators' to see (logged), not the user's
        log.warning("console refused: display address %r of host %s does not resolve", address, host.name)
        raise ConsoleUnavailable(f"The screen console of host {host.name} is unavailable: its display address "
                                 "does not resolve; an administrator must correct it.") from None
    ips = [str(info[4][0]) for info in infos]
    if not ips or any(address_is_loopback(ip) or address_is_wildcard(ip) for ip in ips):
        log.warning("console refused: display address %r of remote host %s resolves to %s", address, host.name, ips)
        raise ConsoleUnavailable(f"The screen console is not available for VMs on host {host.name}: its display "
                                 "address leads to this machine; an administrator must correct it.")
    return ips[0]


def _stale_before():
    return timezone.now() - timedelta(seconds=_stale_seconds())


def _serial_role(*, vm: VM, user: User) -> str:
    """CONTROL for the first terminal; for a second one, the owner's choice: refuse or watch."""
    conf = console_settings_for(vm=vm)
    ConsoleSettings.objects.select_for_update().filter(pk=conf.pk).first()  # serialise racing openers
    active = (ConsoleSession.objects.filter(vm=vm, kind=ConsoleKind.SERIAL, role=SessionRole.CONTROL,
                                            closed_at__isnull=True, terminate_requested_at__isnull=True,
                                            last_seen_at__gte=_stale_before())
              .select_related("user").first())
    if active is None:
        return SessionRole.CONTROL
    if conf.serial_sharing == SerialSharing.READ_ONLY:
        return SessionRole.WATCH
    who = "you, in another window" if active.user_id == user.pk else active.user.get_username()
    raise ConsoleBusy(f"The terminal of {vm.name} is in use by {who}; its owner allows one terminal at a time.")


# --- open sessions ----------------------------------------------------------------------------------

def console_session_check(*, session_id: int) -> None:
    """Raise the reason an open session must end now (revoked, signed out, VM stopped), else mark it alive."""
    session = (ConsoleSession.objects
               .select_related("user", "vm", "share", "share__vm", "share__created_by", "ticket")
               .filter(pk=session_id).first())
    if session is None or session.closed_at is not None:
        raise SessionEnded("The console session ended.")
    if session.terminate_requested_at is not None:
        raise ConsoleForbidden("An administrator ended this console session.")
    _check_access(user=session.user, vm_id=session.vm_id, share=session.share)
    if session.ticket is not None and _session_user_id(session.ticket.session_key) != str(session.user_id):
        raise ConsoleForbidden("You signed out: the console closed.")
    _check_running(session.vm)
    ConsoleSession.objects.filter(pk=session_id).update(last_seen_at=timezone.now())


def console_session_end_reason(*, session_id: int) -> PortalError | None:
    """Why the guest side of a session went away: the VM stopped (4410), or None while undecided.

    QEMU closes its display before libvirt reports the domain shut off, so relays ask again for a
    few seconds (without holding a thread) and then fall back to `SessionEnded`.
    """
    session = ConsoleSession.objects.select_related("vm", "vm__host").get(pk=session_id)
    vm = session.vm
    if vm.status not in (VMStatus.RUNNING, VMStatus.PAUSED, VMStatus.REBOOTING):
        return ConsoleVMNotRunning(f"{vm.name} stopped: the console closed.")
    try:
        running = get_driver(vm.host.uri).domain_info(str(vm.uuid)).state.is_active
    except PortalError:
        running = False
    if not running:
        return ConsoleVMNotRunning(f"{vm.name} stopped: the console closed.")
    return None


END_REASON_WAIT_SECONDS = 6.0
ENDED_MESSAGE = "The guest closed the console connection."


def console_session_close(*, session_id: int, code: int | None, reason: str = "", bytes_to_guest: int = 0,
                          bytes_from_guest: int = 0) -> ConsoleSession | None:
    """Close the session row once and audit how long it lasted and why it ended."""
    with transaction.atomic():
        session = (ConsoleSession.objects.select_for_update().filter(pk=session_id, closed_at__isnull=True)
                   .first())
        if session is None:
            return None
        session.closed_at = timezone.now()
        session.close_code = code
        session.close_reason = (reason or "")[:200]
        session.bytes_to_guest = bytes_to_guest
        session.bytes_from_guest = bytes_from_guest
        session.save(update_fields=["closed_at", "close_code", "close_reason", "bytes_to_guest",
                                    "bytes_from_guest"])
        duration = session.duration_seconds
        vm = VM.objects.get(pk=session.vm_id)
        audit(actor=session.user, via=Via.CONSOLE, action="console.close", target=vm,
              message=(f"Closed the {ConsoleKind(session.kind).label.lower()} of {vm.name} after "
                       f"{_human_duration(duration)} via {session.tier}" + (f": {reason}" if reason else "")),
              data={"kind": session.kind, "tier": session.tier, "session": session.pk, "role": session.role,
                    "duration_seconds": round(duration, 3), "close_code": code, "share": session.share_id,
                    "bytes_to_guest": bytes_to_guest, "bytes_from_guest": bytes_from_guest})
    return session


def console_session_terminate(*, actor: Actor, via: str, session: ConsoleSession) -> None:
    """End someone's open console at its next check (admins)."""
    actor = require_user(actor, "Sign in to use consoles.")
    if not actor.is_staff:
        raise PermissionDenied("Only administrators can end other people's console sessions.")
    if session.closed_at is not None:
        return
    ConsoleSession.objects.filter(pk=session.pk, terminate_requested_at__isnull=True).update(
        terminate_requested_at=timezone.now())
    audit(actor=actor, via=via, action="console.terminate", target=session.vm,
          message=f"Ended {session.user.get_username()}'s {session.kind} console of {session.vm.name}",
          data={"session": session.pk})


def console_serial_open(*, session_id: int) -> ConsoleStream:
    """The VM's serial console stream for a controlling session (libvirt openConsole)."""
    session = ConsoleSession.objects.select_related("vm", "vm__host").get(pk=session_id)
    if session.role != SessionRole.CONTROL or session.kind != ConsoleKind.SERIAL:
        raise ConsoleForbidden("Only the controlling terminal session opens the serial console.")
    return get_driver(session.vm.host.uri).open_console(str(session.vm.uuid))


# --- share links ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CreatedShare:
    share: ConsoleShare
    token: str


def console_share_create(*, actor: Actor, via: str, vm: VM | int, recipient: str, hours: int | str = 4,
                         note: str = "") -> CreatedShare:
    """An expiring, revocable, view-only link to the VM's screen for one colleague (audited)."""
    actor = require_user(actor, "Sign in to use consoles.")
    vm = _visible_vm(actor=actor, vm=vm)
    if not (actor.is_staff or vm.owner_id == actor.pk):
        raise PermissionDenied(f"Only the owner of {vm.name} can share its console.")
    errors: dict[str, list[str]] = {}
    username = str(recipient or "").strip()
    user_model = get_user_model()
    target = user_model.objects.filter(**{user_model.USERNAME_FIELD: username}, is_active=True).first()
    if not username:
        errors["recipient"] = ["Give the username of the colleague who may watch."]
    elif target is None:
        errors["recipient"] = [f"No active portal user named {username[:60]!r}."]
    elif target.pk == actor.pk:
        errors["recipient"] = ["You can already see your own console."]
    max_hours = max(1, settings.CONSOLE_SHARE_MAX_HOURS)
    valid_hours = 0
    try:
        valid_hours = int(hours)
        if not 1 <= valid_hours <= max_hours:
            raise ValueError
    except (TypeError, ValueError):
        errors["hours"] = [f"Choose between 1 and {max_hours} hours."]
    note = str(note or "").strip()
    if len(note) > 200:
        errors["note"] = ["Keep the note under 200 characters."]
    if errors or target is None:
        raise ValidationFailed(errors)
    token = new_token(24)
    with transaction.atomic():
        share = ConsoleShare.objects.create(
            token_hash=token_hash(token), vm=vm, created_by=actor, recipient=target, note=note,
            expires_at=timezone.now() + timedelta(hours=valid_hours))
        audit(actor=actor, via=via, action="console.share.create", target=vm,
              message=f"Shared the screen of {vm.name} with {target.get_username()} (view-only, {valid_hours} h)",
              data={"share": share.pk, "recipient": target.get_username(), "hours": valid_hours})
    return CreatedShare(share=share, token=token)


def console_share_revoke(*, actor: Actor, via: str, share: ConsoleShare | int) -> ConsoleShare:
    """Revoke a share link; its open sessions close at their next check (within CONSOLE_POLL_SECONDS)."""
    actor = require_user(actor, "Sign in to use consoles.")
    pk = share.pk if isinstance(share, ConsoleShare) else share
    found = ConsoleShare.objects.select_related("vm", "recipient").filter(pk=pk).first()
    if found is None or not vm_visible(user=actor).filter(pk=found.vm_id).exists():
        raise NotFound(f"Share link {pk} not found.")
    if not (actor.is_staff or found.created_by_id == actor.pk or found.vm.owner_id == actor.pk):
        raise PermissionDenied("Only the VM's owner can revoke its share links.")
    if found.revoked_at is None:
        with transaction.atomic():
            found.revoked_at = timezone.now()
            found.revoked_by = actor
            found.save(update_fields=["revoked_at", "revoked_by"])
            open_sessions = ConsoleSession.objects.filter(share=found, closed_at__isnull=True).count()
            audit(actor=actor, via=via, action="console.share.revoke", target=found.vm,
                  message=(f"Revoked the screen share of {found.vm.name} with {found.recipient.get_username()}"
                           + (f"; {open_sessions} open session(s) will close" if open_sessions else "")),
                  data={"share": found.pk})
    return found


def _usable_share(*, actor: Actor, share: ConsoleShare) -> ConsoleShare:
    share = ConsoleShare.objects.select_related("vm", "created_by").get(pk=share.pk)
    actor = require_user(actor, "Sign in to open a shared console.")
    _check_access(user=actor, vm_id=share.vm_id, share=share)
    return share


SHARE_ENDED_MESSAGE = "This share link has ended: the VM it showed was deleted."


def console_share_resolve(*, user: Actor, token: str) -> ConsoleShare:
    """The share link behind `token`, for its recipient; anything else looks like a missing link.

    A share of a deleted (or deleting) VM has ended: it answers NotFound too, saying so.
    """
    share = (ConsoleShare.objects.select_related("vm", "vm__host", "created_by", "recipient")
             .filter(token_hash=token_hash(token or "")).first())
    if share is None or user is None or not user.is_authenticated or share.recipient_id != user.pk:
        raise NotFound("This share link does not exist or is not for you.")
    if share.vm_gone:
        raise NotFound(SHARE_ENDED_MESSAGE)
    return share


def console_shares_for_vm(*, user: User, vm: VM) -> QuerySet[ConsoleShare]:
    """The VM's share links, for its owner and staff."""
    if not (user.is_staff or vm.owner_id == user.pk):
        return ConsoleShare.objects.none()
    return ConsoleShare.objects.filter(vm=vm).select_related("vm", "recipient", "created_by")


def console_tickets_purge(*, older_than_hours: int = 24) -> int:
    """Delete spent and expired tickets (sessions keep their own record)."""
    cutoff = timezone.now() - timedelta(hours=older_than_hours)
    deleted, _ = ConsoleTicket.objects.filter(expires_at__lt=cutoff).delete()
    return deleted


# --- one-time console links (Slack's /vm console, the REST API, manage.py vm console) -------------

CONSOLE_LINK_KINDS = ("screen", "terminal")  # the console pages a link leads to
_LINK_AGAIN = "Ask for a new one (/vm console in Slack, or the API)."


@dataclass(frozen=True)
class IssuedLink:
    """A fresh one-time console link: the plain token goes to its user once, the database keeps its hash."""

    token: str
    vm_id: int
    kind: str
    expires_at: datetime
    ttl_seconds: int

    @property
    def path(self) -> str:
        """The link's path on the portal (doors make it absolute)."""
        return reverse("consoles:link", args=[self.token])


def console_link_create(*, actor: Actor, via: str, vm: VM | int, kind: str = "screen") -> IssuedLink:
    """A link to the VM's screen or terminal page for `actor` only, usable once within CONSOLE_LINK_TTL_SECONDS."""
    actor = require_user(actor, "Sign in to use consoles.")
    if kind not in CONSOLE_LINK_KINDS:
        raise ValidationFailed(f"Unknown console kind {str(kind)[:20]!r} (screen or terminal).", field="kind")
    vm = _visible_vm(actor=actor, vm=vm)
    # A host without a display address has no screen console: say so now, not after the link is opened.
    reason = screen_unavailable_reason(vm) if kind == ConsoleKind.SCREEN else None
    if reason:
        raise ConsoleUnavailable(reason)
    console_rate_check(user=actor)
    ttl = max(0, int(settings.CONSOLE_LINK_TTL_SECONDS))
    token = new_token(32)
    now = timezone.now()
    with transaction.atomic():
        ConsoleLink.objects.filter(expires_at__lt=now - timedelta(days=1)).delete()
        link = ConsoleLink.objects.create(token_hash=token_hash(token), user=actor, vm=vm, kind=kind,
                                          expires_at=now + timedelta(seconds=ttl))
        audit(actor=actor, via=via, action="console.link", target=vm,
              message=f"One-time link to the {kind} of {vm.name} (valid {_human_duration(ttl)})",
              data={"kind": kind, "link": link.pk})
    return IssuedLink(token=token, vm_id=vm.pk, kind=kind, expires_at=link.expires_at, ttl_seconds=ttl)


def console_link_redeem(*, actor: Actor, token: str) -> ConsoleLink:
    """Spend a console link: only its own portal user, once, before it expires, while the VM is visible."""
    found = ConsoleLink.objects.select_related("vm").filter(token_hash=token_hash(token or "")).first()
    if found is None:
        raise NotFound(f"This console link is not valid. {_LINK_AGAIN}")
    if found.user_id != getattr(actor, "pk", None):
        raise PermissionDenied("This console link was made for another portal account. "
                               "Sign in as the account that asked for it.")
    if found.used_at is not None:
        raise Gone(f"This console link was already used. {_LINK_AGAIN}")
    if found.expires_at <= timezone.now():
        raise Gone(f"This console link has expired. {_LINK_AGAIN}")
    _visible_vm(actor=actor, vm=found.vm_id)  # still allowed to see the VM (NotFound otherwise)
    if not ConsoleLink.objects.filter(pk=found.pk, used_at__isnull=True).update(used_at=timezone.now()):
        raise Gone(f"This console link was already used. {_LINK_AGAIN}")
    return found
