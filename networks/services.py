"""Network rules: define networks on their hosts (idempotent, like pools), who may use them,
reservations, and refusals that keep every host whole (nothing half-created, nothing in use removed)."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.utils import timezone

from cluster.models import Host
from portal.actors import Actor, require_admin
from portal.audit import audit
from portal.exceptions import Conflict, PortalError, ValidationFailed
from portal.hypervisor import DhcpHost, NetworkSpec, get_driver

from .models import Network, NetworkHost, Reservation
from .usage import network_users
from .validation import (
    AddressPlan,
    check_reservation_ip,
    plan_addresses,
    validate_bridge,
    validate_dns_servers,
    validate_hostname,
    validate_mac,
    validate_name,
)

log = logging.getLogger(__name__)


# --- libvirt side -------------------------------------------------------------------------------

def network_spec(network: Network) -> NetworkSpec:
    """The libvirt shape of a portal network (the same on every host)."""
    if network.mode == Network.Mode.BRIDGE:
        return NetworkSpec(name=network.libvirt_name, uuid=str(network.uuid), mode="bridge", bridge=network.bridge)
    plan = _plan(network)
    # .all(), sorted here: uses the reservations prefetched by callers that ensure many networks
    reservations = sorted(network.reservations.all(), key=lambda r: ipaddress.IPv4Address(r.ip))
    hosts = tuple(DhcpHost(mac=r.mac, ip=r.ip, name=r.hostname) for r in reservations)
    return NetworkSpec(
        name=network.libvirt_name, uuid=str(network.uuid), mode=network.mode,
        gateway=str(plan.gateway) if plan else None, prefix=plan.prefix if plan else None,
        dhcp_start=str(plan.dhcp_start) if plan else None, dhcp_end=str(plan.dhcp_end) if plan else None,
        hosts=hosts, dns_forwarders=tuple(network.dns_servers or ()),
    )


def _plan(network: Network) -> AddressPlan | None:
    if not network.cidr:
        return None
    return plan_addresses(network.cidr, network.dhcp_start, network.dhcp_end, network.gateway)


def network_ensure_on_host(*, network: Network, host: Host) -> NetworkHost:
    """Define and start the network on the host (idempotent) and record how it went there."""
    placement, _ = NetworkHost.objects.get_or_create(network=network, host=host)
    try:
        info = get_driver(host.uri).ensure_network(network_spec(network))
    except PortalError as exc:
        NetworkHost.objects.filter(pk=placement.pk).update(active=False, last_error=exc.detail or exc.message,
                                                         synced_at=timezone.now())
        raise
    NetworkHost.objects.filter(pk=placement.pk).update(active=info.active, bridge=info.bridge or "",
                                                     last_error="", synced_at=timezone.now())
    placement.active, placement.bridge, placement.last_error = info.active, info.bridge or "", ""
    return placement


def networks_ensure_on_host(*, host: Host) -> None:
    """A host came up: every portal network placed on it runs there (errors are recorded, not raised)."""
    for network in Network.objects.filter(placements__host=host).prefetch_related("reservations"):
        try:
            network_ensure_on_host(network=network, host=host)
        except PortalError as exc:
            log.warning("network %s on %s: %s", network.name, host.name, exc.detail or exc.message)


def _remove_from_host(network: Network, host: Host) -> None:
    get_driver(host.uri).remove_network(network.libvirt_name)
    NetworkHost.objects.filter(network=network, host=host).delete()


# --- checks ---------------------------------------------------------------------------------------

def _check_overlap(*, subnet: ipaddress.IPv4Network, exclude: Network | None) -> None:
    """Portal networks never share addresses: two subnets that overlap are refused, whichever hosts
    they are on today (hosts are added to networks later)."""
    others = Network.objects.exclude(cidr="")
    if exclude is not None:
        others = others.exclude(pk=exclude.pk)
    for other in others:
        try:
            theirs = ipaddress.ip_network(other.cidr)
        except ValueError:
            continue
        if subnet.overlaps(theirs):
            raise ValidationFailed(f"{subnet} overlaps the network {other.name} ({other.cidr}).", field="cidr")


def _check_bridge_on_hosts(bridge: str, hosts: Iterable[Host]) -> None:
    for host in hosts:
        found = get_driver(host.uri).host_bridge(bridge)
        if found is False:
            raise ValidationFailed(f"Host {host.name} has no bridge named {bridge}: create it on the host first "
                                   "(see docs/networks.md).", field="bridge")


def _shape(*, mode: str, cidr: str, dhcp_start: Any, dhcp_end: Any, bridge: str,
           exclude: Network | None, gateway: Any = None, dns_servers: Any = None) -> dict[str, Any]:
    """Checked shape fields of a network, ready to save."""
    if mode not in Network.Mode.values:
        raise ValidationFailed(f"Mode must be one of: {', '.join(Network.Mode.values)}.", field="mode")
    if mode == Network.Mode.BRIDGE:
        if cidr or dhcp_start or dhcp_end:
            raise ValidationFailed("A bridged network gets its addresses from the bridge's own LAN: leave the "
                                   "address and DHCP ranges empty.", field="cidr")
        if gateway:
            raise ValidationFailed("A bridged network has no host address of the portal's: leave it empty.",
                                   field="gateway")
        if dns_servers:
            raise ValidationFailed("A bridged network's guests get their DNS servers from the bridge's own LAN.",
                                   field="dns_servers")
        return {"mode": mode, "bridge": validate_bridge(bridge), "cidr": "", "dhcp_start": None, "dhcp_end": None,
                "gateway": None, "dns_servers": []}
    if bridge:
        raise ValidationFailed("Only bridged networks name a host bridge; libvirt makes one for this network.",
                               field="bridge")
    if not cidr:
        raise ValidationFailed("Give the network's address range, e.g. 10.100.0.0/24.", field="cidr")
    plan = plan_addresses(cidr, dhcp_start, dhcp_end, gateway)
    dns = validate_dns_servers(dns_servers)
    _check_overlap(subnet=plan.subnet, exclude=exclude)
    return {"mode": mode, "bridge": "", "cidr": str(plan.subnet), "dhcp_start": str(plan.dhcp_start),
            "dhcp_end": str(plan.dhcp_end), "gateway": str(plan.gateway), "dns_servers": dns}


def _hosts(hosts: Iterable[Host | int | str]) -> list[Host]:
    out = []
    for key in hosts:
        if isinstance(key, Host):
            out.append(key)
            continue
        text = str(key).strip()
        host = Host.objects.filter(pk=int(text)).first() if (text.isascii() and text.isdigit() and len(text) <= 18) else Host.objects.filter(name=text).first()
        if host is None:
            raise ValidationFailed(f"Unknown host {text[:60]!r}.", field="hosts")
        out.append(host)
    return out


def _groups(groups: Iterable[Group | int | str]) -> list[Group]:
    out = []
    for key in groups:
        if isinstance(key, Group):
            out.append(key)
            continue
        text = str(key).strip()
        group = Group.objects.filter(pk=int(text)).first() if (text.isascii() and text.isdigit() and len(text) <= 18) else Group.objects.filter(name=text).first()
        if group is None:
            raise ValidationFailed(f"Unknown group {text[:80]!r}.", field="groups")
        out.append(group)
    return out


# --- networks -------------------------------------------------------------------------------------

def network_create(*, actor: Actor, via: str, name: str, mode: str = Network.Mode.ISOLATED, cidr: str = "",
                   dhcp_start: Any = None, dhcp_end: Any = None, bridge: str = "",
                   hosts: Iterable[Host | int | str] = (), groups: Iterable[Group | int | str] = (),
                   is_public: bool = False, is_default: bool = False, title: str = "",
                   description: str = "", gateway: Any = None, dns_servers: Any = None) -> Network:
    """Add a network and define it on each of its hosts. If any host refuses, it is removed again from
    the hosts that took it and nothing is kept."""
    require_admin(actor, "Only administrators define networks.")
    name = validate_name(name)
    if Network.objects.filter(name=name).exists():
        raise ValidationFailed(f"A network named {name!r} exists already.", field="name")
    shape = _shape(mode=mode, cidr=(cidr or "").strip(), dhcp_start=dhcp_start, dhcp_end=dhcp_end,
                   bridge=(bridge or "").strip(), exclude=None, gateway=gateway, dns_servers=dns_servers)
    host_list, group_list = _hosts(hosts), _groups(groups)
    if shape["mode"] == Network.Mode.BRIDGE:
        _check_bridge_on_hosts(shape["bridge"], host_list)
    try:
        with transaction.atomic():
            if is_default:
                Network.objects.filter(is_default=True).update(is_default=False)
            network = Network.objects.create(name=name, title=(title or "").strip()[:100],
                                             description=description or "", is_public=bool(is_public),
                                             is_default=bool(is_default), **shape)
            network.groups.set(group_list)
    except IntegrityError:
        raise ValidationFailed(f"A network named {name!r} exists already.", field="name") from None
    done: list[Host] = []
    try:
        for host in host_list:
            network_ensure_on_host(network=network, host=host)
            done.append(host)
    except PortalError as exc:
        for host in done + [h for h in host_list if h not in done]:
            try:
                get_driver(host.uri).remove_network(network.libvirt_name)
            except PortalError:
                log.warning("could not remove network %s from %s after a failed create", name, host.name)
        network.delete()
        failed = host_list[len(done)]
        raise Conflict(f"The network could not be started on host {failed.name}, so it was not created: "
                       f"{exc.message}", detail=exc.detail) from exc
    audit(actor=actor, via=via, action="network.create", target=network,
          message=f"Created network {name} ({network.get_mode_display()}"
                  f"{', ' + network.cidr if network.cidr else ''}{', bridge ' + network.bridge if network.bridge else ''})"
                  f" on {', '.join(h.name for h in host_list) or 'no host yet'}",
          data={"mode": network.mode, "cidr": network.cidr, "hosts": [h.name for h in host_list]})
    return network


_SHAPE_FIELDS = ("mode", "cidr", "dhcp_start", "dhcp_end", "bridge", "gateway", "dns_servers")


def network_update(*, actor: Actor, via: str, network: Network, **changes: Any) -> Network:
    """Change a network. Presentation and access change at once; the address shape only while no VM
    uses it (and its reservations still fit); hosts can be added (defined there) or removed (refused
    while VMs there use it). The row stays locked throughout, so no NIC is added meanwhile."""
    require_admin(actor, "Only administrators change networks.")
    with transaction.atomic():
        locked = Network.objects.select_for_update().get(pk=network.pk)
        return _network_update(actor=actor, via=via, network=locked, changes=changes)


def _network_update(*, actor: Actor, via: str, network: Network, changes: dict[str, Any]) -> Network:
    unknown = set(changes) - {*_SHAPE_FIELDS, "title", "description", "is_public", "is_default", "groups", "hosts"}
    if unknown:
        raise ValidationFailed(f"Unknown field {sorted(unknown)[0]!r}.")
    said: list[str] = []
    wanted_shape = {f: changes.get(f, getattr(network, f)) for f in _SHAPE_FIELDS}
    if "cidr" in changes and "gateway" not in changes and str(changes["cidr"] or "").strip() != network.cidr:
        wanted_shape["gateway"] = None  # a new subnet: the host takes its first address unless told
    if "dns_servers" in changes:
        wanted_shape["dns_servers"] = validate_dns_servers(changes["dns_servers"])
    current = {f: getattr(network, f) for f in _SHAPE_FIELDS}

    def norm(values: dict[str, Any]) -> dict[str, Any]:
        out = {k: (list(v or []) if k == "dns_servers" else (str(v) if v not in (None, "") else None))
               for k, v in values.items()}
        if out["gateway"] is None and out["cidr"]:  # no host address given: the subnet's first one
            try:
                out["gateway"] = str(ipaddress.ip_network(str(out["cidr"]).strip()).network_address + 1)
            except ValueError:
                pass
        return out

    if norm(wanted_shape) != norm(current):
        users = network_users(network)
        if users:
            raise Conflict(f"Network {network.name} is in use ({_names(users)}): its addresses and mode cannot "
                           "change until those NICs are removed.")
        shape = _shape(mode=str(wanted_shape["mode"]), cidr=str(wanted_shape["cidr"] or "").strip(),
                       dhcp_start=wanted_shape["dhcp_start"], dhcp_end=wanted_shape["dhcp_end"],
                       bridge=str(wanted_shape["bridge"] or "").strip(), exclude=network,
                       gateway=wanted_shape["gateway"], dns_servers=wanted_shape["dns_servers"])
        if shape["mode"] == Network.Mode.BRIDGE:
            if network.reservations.exists():
                raise ValidationFailed("A bridged network has no DHCP of its own: remove its reservations first.",
                                       field="mode")
            _check_bridge_on_hosts(shape["bridge"], Host.objects.filter(network_placements__network=network))
        else:
            plan = plan_addresses(shape["cidr"], shape["dhcp_start"], shape["dhcp_end"], shape["gateway"])
            for reservation in network.reservations.all():
                try:
                    check_reservation_ip(plan, reservation.ip)
                except ValidationFailed:
                    raise ValidationFailed(f"The reservation of {reservation.ip} ({reservation.mac}) does not fit "
                                           f"{plan.subnet}: remove or change it first.", field="cidr") from None
        Network.objects.filter(pk=network.pk).update(**shape)
        for key, value in shape.items():
            setattr(network, key, value)
        said.append("addresses")
        for placement in network.placements.select_related("host"):
            network_ensure_on_host(network=network, host=placement.host)
    simple = {k: changes[k] for k in ("title", "description", "is_public", "is_default") if k in changes}
    if simple:
        with transaction.atomic():
            if simple.get("is_default"):
                Network.objects.filter(is_default=True).exclude(pk=network.pk).update(is_default=False)
            Network.objects.filter(pk=network.pk).update(**simple)
        for key, value in simple.items():
            setattr(network, key, value)
        said.extend(simple)
    if "groups" in changes:
        network.groups.set(_groups(changes["groups"] or ()))
        said.append("groups")
    if "hosts" in changes:
        wanted_hosts = {h.pk: h for h in _hosts(changes["hosts"] or ())}
        have = {p.host_id: p.host for p in network.placements.select_related("host")}
        for host_id, host in have.items():
            if host_id not in wanted_hosts:
                users = network_users(network, host)
                if users:
                    raise Conflict(f"Network {network.name} is in use on {host.name} ({_names(users)}).")
        if network.mode == Network.Mode.BRIDGE:
            _check_bridge_on_hosts(network.bridge, [h for pk, h in wanted_hosts.items() if pk not in have])
        added: list[Host] = []
        try:
            for host_id, host in wanted_hosts.items():
                if host_id not in have:
                    network_ensure_on_host(network=network, host=host)
                    added.append(host)
        except PortalError:
            for host in added + [h for pk, h in wanted_hosts.items() if pk not in have and h not in added]:
                try:
                    _remove_from_host(network, host)
                except PortalError:
                    log.warning("could not remove network %s from %s after a failed change", network.name, host.name)
            raise
        for host_id, host in have.items():
            if host_id not in wanted_hosts:
                _remove_from_host(network, host)
        said.append("hosts")
    if said:
        audit(actor=actor, via=via, action="network.update", target=network,
              message=f"Changed network {network.name}: {', '.join(said)}")
    return network


def _names(users: list[str], limit: int = 5) -> str:
    more = f" and {len(users) - limit} more" if len(users) > limit else ""
    return ", ".join(users[:limit]) + more


def network_delete(*, actor: Actor, via: str, network: Network) -> None:
    """Remove a network from every host and the portal; refused while any VM has a NIC on it.

    The network's row stays locked from the check to its removal, so no NIC can be put on it in
    between (vms locks the row when it adds NICs)."""
    require_admin(actor, "Only administrators delete networks.")
    with transaction.atomic():
        network = Network.objects.select_for_update().get(pk=network.pk)
        users = network_users(network)
        if users or network.nics.exists():  # network.nics: rows of VMs whose delete has not finished
            users = users or ["VMs being deleted"]
            raise Conflict(f"Network {network.name} is in use by {len(users)} NIC(s) ({_names(users)}); "
                           "remove those NICs or delete those VMs first.", network=network.name)
        for placement in network.placements.select_related("host"):
            get_driver(placement.host.uri).remove_network(network.libvirt_name)
        audit(actor=actor, via=via, action="network.delete", target=network,
              message=f"Deleted network {network.name}")
        network.delete()


# --- reservations -------------------------------------------------------------------------------

def reservation_add(*, actor: Actor, via: str, network: Network, mac: str, ip: str,
                    hostname: str = "") -> Reservation:
    """A static DHCP lease, applied live on every host of the network (running guests keep their links)."""
    require_admin(actor, "Only administrators reserve addresses.")
    plan = _plan(network)
    if plan is None:
        raise ValidationFailed(f"Network {network.name} has no address range the portal manages.", field="ip")
    mac = validate_mac(mac)
    ip = check_reservation_ip(plan, ip)
    hostname = validate_hostname(hostname)
    if network.reservations.filter(mac=mac).exists():
        raise ValidationFailed(f"{mac} already has a reservation on {network.name}.", field="mac")
    if network.reservations.filter(ip=ip).exists():
        raise ValidationFailed(f"{ip} is already reserved on {network.name}.", field="ip")
    try:
        with transaction.atomic():
            reservation = Reservation.objects.create(network=network, mac=mac, ip=ip, hostname=hostname)
    except IntegrityError:
        raise ValidationFailed(f"{mac} or {ip} is already reserved on {network.name}.", field="ip") from None
    try:
        for placement in network.placements.select_related("host"):
            network_ensure_on_host(network=network, host=placement.host)
    except PortalError:
        reservation.delete()
        for placement in network.placements.select_related("host"):
            try:
                network_ensure_on_host(network=network, host=placement.host)
            except PortalError:
                pass
        raise
    audit(actor=actor, via=via, action="network.reservation.add", target=network,
          message=f"Reserved {ip} for {mac}{' (' + hostname + ')' if hostname else ''} on {network.name}")
    return reservation


def reservation_remove(*, actor: Actor, via: str, reservation: Reservation) -> None:
    require_admin(actor, "Only administrators remove reservations.")
    network = reservation.network
    reservation.delete()
    for placement in network.placements.select_related("host"):
        network_ensure_on_host(network=network, host=placement.host)
    audit(actor=actor, via=via, action="network.reservation.remove", target=network,
          message=f"Removed the reservation of {reservation.ip} for {reservation.mac} on {network.name}")
