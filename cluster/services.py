"""Hosts: registration, facts from libvirt, the KVM boot probe, enable/disable, and reconciliation.

Reconciliation is shared: this module lists what runs on a host and hands the domains to the
registered observers (vms registers the one that keeps VM states true, see cluster.observers);
whatever no observer claims is recorded as a foreign domain, listed for admins and never touched.
"""

from __future__ import annotations

import logging
import threading
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from portal.actors import Actor, require_admin
from portal.audit import audit
from portal.choices import Via
from portal.exceptions import Conflict, HypervisorUnavailable, PortalError, ValidationFailed
from portal.hypervisor import DomainSpec, DomainState, get_driver

from . import observers
from .choices import DomainType, HostStatus
from .hostconfig import host_uri_check, storage_path_check
from .models import Cluster, ForeignDomain, Host
from .signals import host_registering, host_up

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeBoot:
    """What the KVM probe boots: a direct-kernel guest that prints `ready_marker` once it is up."""

    kernel: str
    initrd: str
    ready_marker: str


def host_register(*, actor: Actor, via: str = Via.CLI, name: str, uri: str,
                  domain_type: str = DomainType.AUTO, storage_dir: str | None = None) -> Host:
    """Add (or update) a host, read its facts; a reachable host gets the portal's storage (host_up), in
    `storage_dir` on that host when given (else STORAGE_DIR; an existing pool keeps its path)."""
    require_admin(actor, "Only administrators register hosts.")
    if domain_type not in DomainType.values:
        raise ValidationFailed(f"Domain type must be one of {', '.join(DomainType.values)}.", field="domain_type")
    uri = host_uri_check(uri)  # known transports only (cluster.hostconfig), for every door
    if storage_dir:
        storage_dir = storage_path_check(storage_dir, field="storage_dir")
    other = Host.objects.filter(name=name).exclude(uri=uri).values_list("uri", flat=True).first()
    if other is not None:  # names are unique: say so rather than fail on the constraint
        raise ValidationFailed(f"A host named {name!r} is already registered ({other}); choose another name.",
                               field="name")
    with transaction.atomic():
        host, created = Host.objects.update_or_create(uri=uri, defaults={"name": name, "domain_type": domain_type})
        if host.cluster_id is None:  # a host always belongs to a cluster: the default one unless an admin says
            Host.objects.filter(pk=host.pk).update(cluster=cluster_default())
            host.refresh_from_db(fields=["cluster"])
        host_registering.send(sender=Host, host=host, storage_dir=storage_dir or None)
    host_refresh(host=host)
    audit(actor=actor, via=via, action="host.register" if created else "host.update", target=host,
          message=f"{uri} ({domain_type})")
    return host


def cluster_default() -> Cluster:
    """The cluster hosts join unless an administrator puts them elsewhere ("Default", made on first use)."""
    cluster, _ = Cluster.objects.get_or_create(name="Default")
    return cluster


# States an administrator (or the maintenance and power-saving flows) set: a heartbeat never overrides
# them. A maintenance or standby host that does not answer keeps its state (it is expected to be quiet).
_ADMIN_STATES = (HostStatus.PREPARING_FOR_MAINTENANCE, HostStatus.MAINTENANCE, HostStatus.STANDBY)
_MAINTENANCE_STATES = (HostStatus.PREPARING_FOR_MAINTENANCE, HostStatus.MAINTENANCE)


def _host_transition(host: Host, status: str, **fields: Any) -> None:
    """Write the host's new state (and `fields`); `status_changed_at` moves only when the state does."""
    if status != host.status:
        fields["status_changed_at"] = timezone.now()
    fields["status"] = status
    Host.objects.filter(pk=host.pk).update(**fields)
    for key, value in fields.items():
        setattr(host, key, value)


def host_refresh(*, host: Host) -> Host:
    """The heartbeat: read the host's facts and load from libvirt and keep its state true.

    A host that answers is up (an administrator's maintenance/preparing/standby state is kept);
    `failures` goes back to 0, `last_error` is cleared, and a host that was non-responsive or down is
    audited `host.up`. A host that fails counts `failures` and keeps the newest reason in `last_error`:
    after HOST_NON_RESPONSIVE_FAILURES failures in a row an up host is non-responsive (audited
    `host.non_responsive`; its VMs show as unknown, their actions are refused); a host that never
    answered, or stayed non-responsive for HOST_DOWN_AFTER_SECONDS, is down (audited `host.down`).
    Each try is bounded by the gateway's connect deadline and keepalive.

    A reachable host sends `host_up`, so the apps that keep things on hosts (storage pools) make
    sure they are there: a fresh test driver, or a pool undefined by hand, is repaired.
    """
    try:
        info = get_driver(host.uri).host_info()
    except HypervisorUnavailable as exc:
        _host_failed(host, exc.detail or exc.message)  # hosts are for administrators: the hypervisor's words
        return host
    was = host.status
    fields: dict[str, Any] = {
        "hostname": info.hostname, "libvirt_version": info.libvirt_version, "cpus": info.cpus,
        "memory_mib": info.memory_mib, "free_memory_mib": info.free_memory_mib, "last_seen_at": timezone.now(),
        "running_domains": info.running_domains, "cpu_usage_percent": info.cpu_usage_percent,
        "last_error": "", "failures": 0,
    }
    if host.confirmed_down_at is not None:
        fields["confirmed_down_at"] = None  # it answers again: no longer confirmed down (cluster.power)
    # Maintenance states are the administrator's; a standby host that answers has been woken (cluster.power).
    _host_transition(host, was if was in _MAINTENANCE_STATES else HostStatus.UP, **fields)
    if was in (HostStatus.NON_RESPONSIVE, HostStatus.DOWN):
        audit(actor=None, via=Via.SYSTEM, action="host.up", target=host,
              message=f"{host.name} answers again (was {HostStatus(was).label.lower()})")
    for receiver, result in host_up.send_robust(sender=Host, host=host):
        if isinstance(result, Exception):
            log.warning("host_up receiver %r failed for %s: %s", receiver, host.name, result)
    return host


def _host_failed(host: Host, reason: str) -> None:
    """One failed heartbeat: count it, keep the reason fresh, move the state on when it is time."""
    failures = host.failures + 1
    was = host.status
    status = was
    if was in _ADMIN_STATES:
        pass
    elif host.last_seen_at is None:
        status = HostStatus.DOWN  # it never answered: nothing to wait for
    elif was == HostStatus.NON_RESPONSIVE:
        since = host.status_changed_at or timezone.now()
        if (timezone.now() - since).total_seconds() >= settings.HOST_DOWN_AFTER_SECONDS:
            status = HostStatus.DOWN
    elif was != HostStatus.DOWN and failures >= settings.HOST_NON_RESPONSIVE_FAILURES:
        status = HostStatus.NON_RESPONSIVE
    _host_transition(host, status, failures=failures, last_error=reason)
    if status != was:
        action = "host.down" if status == HostStatus.DOWN else "host.non_responsive"
        audit(actor=None, via=Via.SYSTEM, action=action, target=host,
              message=f"{host.name} does not answer ({failures} failed heartbeat(s)): {reason}")
    log.warning("heartbeat of %s failed (%d in a row, %s): %s", host.name, failures, status, reason)


def host_set_enabled(*, actor: Actor, via: str, host: Host, enabled: bool) -> Host:
    """Enable or disable a host for new VMs (running VMs stay where they are); audited."""
    require_admin(actor, "Only administrators enable or disable hosts.")
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host.pk)
        if host.enabled == enabled:
            return host
        host.enabled = enabled
        host.save(update_fields=["enabled"])
        audit(actor=actor, via=via, action="host.enable" if enabled else "host.disable", target=host,
              message=f"{'Enabled' if enabled else 'Disabled'} {host.name} for new VMs")
    return host


def host_delete_refusal(*, host: Host) -> str | None:
    """Why `host` cannot be deleted (VMs, live or deleted, still name it), or None when it can."""
    live = host.vms.filter(deleted_at__isnull=True).count()  # reverse relation: cluster imports no vms
    total = host.vms.count()
    if not total:
        return None
    if live:
        return f"Cannot delete host {host.name}: {live} VM(s) still live on it. Delete or move them first."
    return (f"Cannot delete host {host.name}: {total} deleted VM record(s) still name it and are kept for "
            "the audit trail. Disable the host instead (untick “enabled”) so it gets no new VMs.")


def host_delete(*, actor: Actor, via: str, host: Host) -> None:
    """Forget a host (its pools and foreign-domain rows with it); refused while any VM names it.

    Nothing on the host itself is touched: its libvirt pools and domains stay as they are.
    """
    require_admin(actor, "Only administrators delete hosts.")
    reason = host_delete_refusal(host=host)
    if reason:
        raise Conflict(reason, host=host.name)
    with transaction.atomic():
        audit(actor=actor, via=via, action="host.delete", target=host, message=f"Deleted host {host.name} ({host.uri})")
        host.delete()


def host_probe_kvm(*, host: Host, boot: ProbeBoot | None, timeout: float = 15.0, force: bool = False) -> bool:
    """Does a Linux guest really boot under KVM on this host? Probed once, remembered on the host.

    A host can offer /dev/kvm and still not run guests (a software substitute, nested set-ups):
    the probe boots `boot` (a direct-kernel image, see storage.selectors.image_probe_boot) under
    KVM and waits for its ready banner on the console.
    """
    if host.kvm_boots_guests is not None and not force:
        return host.kvm_boots_guests
    driver = get_driver(host.uri)
    result = False
    reason = ""
    if "kvm" not in driver.domain_types():
        reason = "libvirt offers no kvm domain type"
    elif boot is None:
        reason = "no direct-kernel image with a ready marker to probe with"
    else:
        spec = DomainSpec(
            name=f"{settings.DOMAIN_PREFIX}-kvmprobe-{uuidlib.uuid4().hex[:6]}",
            uuid=str(uuidlib.uuid4()), vcpus=1, memory_mib=128, domain_type="kvm",
            kernel=boot.kernel, initrd=boot.initrd,
            cmdline="console=ttyS0,115200 panic=-1", graphics=False,
            metadata={"instance": settings.INSTANCE_ID, "probe": "kvm"},
        )
        try:
            result = driver.probe_boot(spec, boot.ready_marker.encode(), timeout)
            reason = "guest booted" if result else f"no boot banner within {timeout:.0f} s"
        except PortalError as exc:
            reason = f"probe domain failed: {exc.detail or exc.message}"
    Host.objects.filter(pk=host.pk).update(kvm_boots_guests=result, kvm_probed_at=timezone.now())
    host.kvm_boots_guests = result
    log.info("KVM probe on %s: %s (%s)", host.name, result, reason)
    audit(actor=None, via=Via.SYSTEM, action="host.kvm_probe", target=host,
          message=f"KVM {'boots' if result else 'does not boot'} guests: {reason}")
    return result


def _ours(meta: dict[str, str]) -> bool:
    return meta.get("instance") == settings.INSTANCE_ID and "vm-id" in meta


# The bulk listing (list_domain_states) carries no metadata. Domains nobody claims by UUID (foreign ones,
# copies of VMs recorded on another host) need theirs, so it is read once per domain and kept here per
# process: host pk -> uuid -> (name, metadata). An entry goes when the domain does or is claimed, when its
# name changes, and on any lifecycle event for it (a domain defined again may carry other metadata): a
# steady host costs the reconcile one listing call, whatever its number of domains.
_metadata: dict[int, dict[str, tuple[str, dict[str, str]]]] = {}
_metadata_lock = threading.Lock()


def host_domain_metadata(*, host: Host, domain: DomainState) -> dict[str, str] | None:
    """The portal metadata of `domain` on `host` ({} for a domain the portal did not create), read from
    libvirt only the first time (see `_metadata`); None when it cannot be read now (gone, host failing)."""
    with _metadata_lock:
        known = _metadata.get(host.pk, {}).get(domain.uuid)
    if known is not None and known[0] == domain.name:
        return known[1]
    try:
        meta = get_driver(host.uri).domain_metadata(domain.uuid) or {}
    except PortalError as exc:
        log.debug("metadata of %s on %s: %s", domain.name, host.name, exc.detail or exc.message)
        return None
    with _metadata_lock:
        _metadata.setdefault(host.pk, {})[domain.uuid] = (domain.name, meta)
    return meta


def _metadata_keep(host: Host, uuids: set[str]) -> None:
    """Keep only the metadata of `host`'s unclaimed domains: a domain gone, or claimed by an observer
    (adopted: its metadata is rewritten, and again when it is released), is read anew when it is next
    unclaimed."""
    with _metadata_lock:
        known = _metadata.get(host.pk)
        if known:
            for uuid in set(known) - uuids:
                del known[uuid]


def host_sync(*, host: Host) -> dict[str, Any]:
    """Reconcile one host: observers bring their records in line, the rest is listed as foreign.

    The host's domains come from one bulk call (state only; with the counters too when an observer wants
    them, still one call); the only other per-domain calls are for
    domains whose metadata was never read (see `_metadata`) and what observers do about drift."""
    driver = get_driver(host.uri)
    host_refresh(host=host)
    if host.last_error:  # the heartbeat failed: nothing can be listed; an unreachable host's VMs are unknown
        if host.status in HostStatus.UNREACHABLE:
            for observer in observers.registered():
                hook = getattr(observer, "host_unreachable", None)
                if hook is not None:
                    hook(host=host)
        return {"host": host.name, "status": host.status if host.status != HostStatus.UP else "error",
                "error": host.last_error, "failures": host.failures}
    want_stats = False
    for observer in observers.registered():
        wants = getattr(observer, "wants_stats", None)
        want_stats = want_stats or bool(wants is not None and wants(host=host))
    try:
        domains = driver.list_domain_states(stats=want_stats)
    except PortalError as exc:
        return {"host": host.name, "status": "error", "error": exc.detail or exc.message}
    claimed: set[str] = set()
    drifted = 0
    hints: dict[str, str] = {}
    for observer in observers.registered():
        outcome = observer.reconcile(host=host, domains=domains)
        claimed |= outcome.claimed
        drifted += outcome.drifted
        hints.update(outcome.hints)
    foreign = [d for d in domains if d.uuid not in claimed]
    _metadata_keep(host, {d.uuid for d in foreign})
    rows = {fd.uuid: fd for fd in ForeignDomain.objects.filter(host=host)}
    unchanged: list[int] = []
    with transaction.atomic():
        for d in foreign:
            meta = host_domain_metadata(host=host, domain=d) if d.uuid not in hints else {}
            if d.uuid in hints:
                hint = hints[d.uuid][:200]
            elif meta is None:  # not readable now: the hint it had
                hint = rows[d.uuid].owner_hint if d.uuid in rows else ""
            elif _ours(meta):
                hint = f"orphan of this portal (VM #{meta['vm-id']} has no live record)"
            elif meta:
                hint = f"portal instance {meta.get('instance', '?')}"
            else:
                hint = ""
            row = rows.get(d.uuid)
            if row is None or (row.name, row.state, row.owner_hint) != (d.name, d.state, hint):
                ForeignDomain.objects.update_or_create(
                    host=host, uuid=d.uuid, defaults={"name": d.name, "state": d.state, "owner_hint": hint})
            else:
                unchanged.append(row.pk)
        if unchanged:  # seen again as they were: one update for all of them
            ForeignDomain.objects.filter(pk__in=unchanged).update(last_seen_at=timezone.now())
        gone = set(rows) - {d.uuid for d in foreign}
        if gone:
            ForeignDomain.objects.filter(host=host, uuid__in=gone).delete()
    return {"host": host.name, "status": host.status, "domains": len(domains), "drifted": drifted,
            "foreign": len(foreign)}


def foreign_domain_forget(*, host: Host, uuid: str) -> None:
    """The domain is the portal's now (adopted): it leaves the foreign list."""
    ForeignDomain.objects.filter(host=host, uuid=uuid).delete()


def foreign_domain_record(*, host: Host, uuid: str, name: str, state: str, owner_hint: str = "") -> ForeignDomain:
    """List a domain as foreign at once (a released VM), as the next reconcile would."""
    fd, _ = ForeignDomain.objects.update_or_create(
        host=host, uuid=uuid, defaults={"name": name, "state": state, "owner_hint": owner_hint})
    return fd


def host_sync_all() -> list[dict[str, Any]]:
    """Reconcile every enabled host."""
    return [host_sync(host=h) for h in Host.objects.filter(enabled=True)]


def host_observe_event(*, host: Host, uuid: str) -> None:
    """A lifecycle event from libvirt for a domain on `host`: every observer reads its state now (and the
    domain's metadata is read again on the next reconcile: it may have been defined anew)."""
    with _metadata_lock:
        _metadata.get(host.pk, {}).pop(uuid, None)
    for observer in observers.registered():
        observer.observe(host=host, uuid=uuid)
