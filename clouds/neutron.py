"""Neutron networks mirrored as portal networks: list, import, compare, re-sync, unlink.

A Neutron network with an IPv4 subnet becomes a portal network (isolated, NAT or bridged) created through
networks.services.network_create, so every rule of networks applies (overlaps refused, all hosts or none,
audited). The mapping of one subnet:

    cidr → cidr, gateway_ip → gateway (the host's address), first allocation pool (the lowest: Neutron keeps no order) → DHCP range,
    dns_nameservers → dns_servers, network name/description → title/description.

A bridged import takes no addresses (guests get them from the bridge's LAN). Re-sync compares Neutron now
with the portal network, records the differences on the NeutronLink and applies them only on request,
through networks.services.network_update (which refuses address changes while VMs use the network).
A network or subnet deleted in Neutron is reported (state "gone"), never applied: the administrator
unlinks or deletes the portal network.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from cluster.models import Host
from networks.models import Network
from networks.services import network_create, network_delete, network_update
from portal.actors import Actor, require_admin
from portal.audit import audit
from portal.exceptions import Conflict, NotFound, PortalError, ValidationFailed

from .connection import cloud_call, connect
from .models import Cloud, NeutronLink

# Portal fields a mirrored network takes from Neutron (compared and re-synced).
ADDRESS_FIELDS = ("cidr", "gateway", "dhcp_start", "dhcp_end", "dns_servers")
TEXT_FIELDS = ("title", "description")


@dataclass
class NeutronSubnet:
    id: str
    name: str
    cidr: str
    ip_version: int
    gateway_ip: str | None
    allocation_pools: list[dict[str, str]]
    dns_nameservers: list[str]
    enable_dhcp: bool

    @property
    def usable(self) -> bool:
        return self.ip_version == 4


@dataclass
class NeutronNetwork:
    id: str
    name: str
    description: str
    status: str
    subnets: list[NeutronSubnet] = field(default_factory=list)
    link: NeutronLink | None = None

    @property
    def ipv4_subnets(self) -> list[NeutronSubnet]:
        return [s for s in self.subnets if s.usable]

    @property
    def mirrored_by(self) -> Network | None:
        return self.link.network if self.link is not None else None

    @property
    def not_mirrored(self) -> list[str]:
        """What of it the portal does not represent (IPv6 subnets)."""
        return [f"IPv6 subnet {s.name or s.id} ({s.cidr}) is not mirrored" for s in self.subnets if not s.usable]


def _pool_order(pool: dict[str, str]) -> tuple:
    """Neutron returns a subnet's pools in no fixed order: "the first" is the lowest one."""
    try:
        return (0, int(ipaddress.ip_address(pool["start"])))
    except ValueError:
        return (1, 0)


def _subnet(raw: Any) -> NeutronSubnet:
    return NeutronSubnet(
        id=str(raw.id), name=str(raw.name or ""), cidr=str(raw.cidr or ""), ip_version=int(raw.ip_version or 4),
        gateway_ip=raw.gateway_ip or None,
        allocation_pools=sorted(({"start": str(p["start"]), "end": str(p["end"])} for p in (raw.allocation_pools or [])),
                                key=_pool_order),
        dns_nameservers=[str(d) for d in (raw.dns_nameservers or [])], enable_dhcp=bool(raw.is_dhcp_enabled))


def _network(raw: Any, subnets: list[NeutronSubnet]) -> NeutronNetwork:
    order = {sid: i for i, sid in enumerate(raw.subnet_ids or [])}
    subnets = sorted(subnets, key=lambda s: (order.get(s.id, len(order)), s.cidr))
    return NeutronNetwork(id=str(raw.id), name=str(raw.name or ""), description=str(raw.description or ""),
                          status=str(raw.status or ""), subnets=subnets)


def _fetch_all(cloud: Cloud) -> dict[str, NeutronNetwork]:
    conn = connect(cloud, "network")
    with cloud_call(cloud, "list Neutron networks"):
        raw_networks = list(conn.network.networks())
        raw_subnets = list(conn.network.subnets())
    by_net: dict[str, list[NeutronSubnet]] = {}
    for raw in raw_subnets:
        by_net.setdefault(str(raw.network_id), []).append(_subnet(raw))
    return {str(raw.id): _network(raw, by_net.get(str(raw.id), [])) for raw in raw_networks}


def neutron_networks(*, actor: Actor, cloud: Cloud) -> list[NeutronNetwork]:
    """The cloud's Neutron networks with their subnets, each with the link to the portal network that
    mirrors it, if any (sorted by name)."""
    require_admin(actor, "Only administrators browse a cloud's networks.")
    found = _fetch_all(cloud)
    for link in NeutronLink.objects.filter(cloud=cloud).select_related("network"):
        if link.neutron_network_id in found:
            found[link.neutron_network_id].link = link
    return sorted(found.values(), key=lambda n: (n.name, n.id))


def _neutron_network(cloud: Cloud, neutron_network_id: str) -> NeutronNetwork:
    conn = connect(cloud, "network")
    with cloud_call(cloud, f"read Neutron network {neutron_network_id}"):
        raw = conn.network.get_network(neutron_network_id)
        subnets = [_subnet(s) for s in conn.network.subnets(network_id=neutron_network_id)]
    return _network(raw, subnets)


# --- mapping -----------------------------------------------------------------------------------------

def portal_name(neutron: NeutronNetwork) -> str:
    """A portal network name from the Neutron name (lowercase, hyphens), or neutron-<id prefix>."""
    name = re.sub(r"[^a-z0-9-]+", "-", neutron.name.lower()).strip("-")[:40].strip("-")
    return name if len(name) >= 2 else f"neutron-{neutron.id.replace('-', '')[:8]}"


def _pick_subnet(neutron: NeutronNetwork, subnet_id: str | None) -> NeutronSubnet | None:
    if subnet_id:
        for subnet in neutron.subnets:
            if subnet.id == subnet_id:
                if not subnet.usable:
                    raise ValidationFailed(f"Subnet {subnet.name or subnet.id} is IPv6: the portal mirrors IPv4 "
                                           "subnets only.", field="subnet_id")
                return subnet
        raise ValidationFailed(f"Neutron network {neutron.name or neutron.id} has no subnet {subnet_id}.",
                               field="subnet_id")
    return neutron.ipv4_subnets[0] if neutron.ipv4_subnets else None


def mapped_fields(neutron: NeutronNetwork, subnet: NeutronSubnet | None, *, bridged: bool) -> tuple[dict, list[str]]:
    """The portal fields a Neutron network (and its subnet) maps to, and notes on what could not be
    mirrored exactly."""
    fields: dict[str, Any] = {"title": neutron.name[:100], "description": neutron.description}
    notes = list(neutron.not_mirrored)
    if bridged:
        if subnet is not None:
            notes.append(f"Bridged: addresses come from the bridge's LAN; subnet {subnet.cidr} is not managed "
                         "by the portal.")
        return fields, notes
    assert subnet is not None
    fields.update(cidr=subnet.cidr, gateway=subnet.gateway_ip, dns_servers=list(subnet.dns_nameservers),
                  dhcp_start=None, dhcp_end=None)
    if subnet.allocation_pools:
        pool = subnet.allocation_pools[0]
        fields.update(dhcp_start=pool["start"], dhcp_end=pool["end"])
        if len(subnet.allocation_pools) > 1:
            others = ", ".join(f"{p['start']}–{p['end']}" for p in subnet.allocation_pools[1:])
            notes.append(f"Subnet {subnet.cidr} has {len(subnet.allocation_pools)} allocation pools: the DHCP "
                         f"range is the first, {pool['start']}–{pool['end']} (not mirrored: {others}).")
    if subnet.gateway_ip is None:
        notes.append("The subnet has no gateway in Neutron: the host takes the subnet's first address.")
    if not subnet.enable_dhcp:
        notes.append("DHCP is off in Neutron; the portal's host serves DHCP on the range all the same.")
    if len(neutron.ipv4_subnets) > 1:
        notes.append(f"The network has {len(neutron.ipv4_subnets)} IPv4 subnets: {subnet.cidr} is mirrored.")
    return fields, notes


def _effective(network: Network) -> dict[str, Any]:
    """A portal network's fields as they compare with Neutron's (the default host address made explicit)."""
    out: dict[str, Any] = {"title": network.title, "description": network.description}
    if network.mode != Network.Mode.BRIDGE and network.cidr:
        gateway = network.gateway or str(ipaddress.ip_network(network.cidr).network_address + 1)
        out.update(cidr=network.cidr, gateway=gateway, dhcp_start=network.dhcp_start, dhcp_end=network.dhcp_end,
                   dns_servers=list(network.dns_servers or []))
    return out


def _differences(network: Network, wanted: dict[str, Any]) -> list[dict[str, Any]]:
    have = _effective(network)
    diffs = []
    for key in (*TEXT_FIELDS, *ADDRESS_FIELDS):
        if key not in wanted or key not in have:
            continue
        mine, theirs = have[key], wanted[key]
        if key == "gateway" and theirs is None:
            continue  # no gateway in Neutron: the portal's default (noted on import)
        if key in ("dhcp_start", "dhcp_end") and theirs is None:
            continue  # no allocation pool: the portal's default range
        if (mine or None) != (theirs or None):
            diffs.append({"field": key, "portal": mine, "neutron": theirs})
    return diffs


# --- import ------------------------------------------------------------------------------------------

def neutron_import(*, actor: Actor, via: str, cloud: Cloud, neutron_network_id: str, name: str | None = None,
                   mode: str = Network.Mode.ISOLATED, bridge: str = "", hosts: Any = None, subnet_id: str | None = None,
                   groups: Any = (), is_public: bool = False) -> NeutronLink:
    """Create the portal network that mirrors a Neutron network, and the link between them.

    `hosts`: the portal hosts to define it on; None (not given): every enabled host, so the network is
    usable at once. Everything networks.network_create checks applies (an overlapping subnet is refused, a
    host that refuses the network undoes it everywhere): on any refusal nothing is created."""
    require_admin(actor, "Only administrators import networks.")
    neutron_network_id = str(neutron_network_id or "").strip()
    if not neutron_network_id:
        raise ValidationFailed("Name the Neutron network to import (its id).", field="neutron_network_id")
    existing = NeutronLink.objects.filter(cloud=cloud, neutron_network_id=neutron_network_id).select_related(
        "network").first()
    if existing is not None:
        raise Conflict(f"Neutron network {existing.neutron_name or neutron_network_id} is already mirrored by "
                       f"the portal network {existing.network.name}.")
    neutron = _neutron_network(cloud, neutron_network_id)
    if mode not in Network.Mode.values:
        raise ValidationFailed(f"Mode must be one of: {', '.join(Network.Mode.values)}.", field="mode")
    bridged = mode == Network.Mode.BRIDGE
    subnet = _pick_subnet(neutron, subnet_id)
    if subnet is None and not bridged:
        raise ValidationFailed(f"Neutron network {neutron.name or neutron.id} has no IPv4 subnet: import it as "
                               "bridged (mode bridge and a host bridge), or add an IPv4 subnet in Neutron.",
                               field="mode")
    fields, notes = mapped_fields(neutron, subnet, bridged=bridged)
    if hosts is None:
        hosts = list(Host.objects.filter(enabled=True).order_by("name"))
    network = network_create(actor=actor, via=via, name=name or portal_name(neutron), mode=mode, bridge=bridge,
                             hosts=hosts, groups=groups, is_public=is_public,
                             **{k: v for k, v in fields.items()})
    now = timezone.now()
    try:
        with transaction.atomic():
            link = NeutronLink.objects.create(
                cloud=cloud, network=network, neutron_network_id=neutron.id,
                neutron_subnet_id=subnet.id if subnet is not None else "", neutron_name=neutron.name,
                state=NeutronLink.State.IN_SYNC, differences=[], notes=notes, synced_at=now, checked_at=now)
    except IntegrityError:
        network_delete(actor=actor, via=via, network=network)
        raise Conflict(f"Neutron network {neutron.name or neutron.id} was imported meanwhile by another "
                       "request.") from None
    audit(actor=actor, via=via, action="cloud.neutron.import", target=network,
          message=f"Imported Neutron network {neutron.name or neutron.id} of cloud {cloud.name} as network "
                  f"{network.name}" + (f" (subnet {subnet.cidr})" if subnet is not None else " (bridged)"),
          data={"cloud": cloud.name, "neutron_network_id": neutron.id,
                "neutron_subnet_id": subnet.id if subnet is not None else "", "notes": notes})
    return link


# --- compare and re-sync -----------------------------------------------------------------------------

@dataclass
class LinkReport:
    """One link compared with Neutron: its state, what differs, and (after a sync) what happened."""

    link: NeutronLink
    state: str
    differences: list[dict[str, Any]]
    gone: str = ""
    applied: list[str] = field(default_factory=list)
    error: str = ""
    neutron_name: str | None = None  # Neutron's name now (None: gone)


@dataclass
class DiffReport:
    links: list[LinkReport]
    not_mirrored: list[NeutronNetwork]


def _compare(link: NeutronLink, found: dict[str, NeutronNetwork]) -> LinkReport:
    neutron = found.get(link.neutron_network_id)
    if neutron is None:
        return LinkReport(link=link, state=NeutronLink.State.GONE, differences=[],
                          gone=f"Neutron network {link.neutron_name or link.neutron_network_id} was deleted in "
                               "Neutron.")
    subnet = None
    if link.neutron_subnet_id:
        subnet = next((s for s in neutron.subnets if s.id == link.neutron_subnet_id), None)
        if subnet is None:
            return LinkReport(link=link, state=NeutronLink.State.GONE, differences=[],
                              gone=f"The subnet it mirrors ({link.neutron_subnet_id}) was deleted in Neutron.")
    bridged = link.network.mode == Network.Mode.BRIDGE
    wanted, _ = mapped_fields(neutron, subnet, bridged=bridged or subnet is None)
    diffs = _differences(link.network, wanted)
    return LinkReport(link=link, state=NeutronLink.State.DIFFERS if diffs else NeutronLink.State.IN_SYNC,
                      differences=diffs, neutron_name=neutron.name)


def _record(report: LinkReport, *, synced: bool = False) -> None:
    now = timezone.now()
    values: dict[str, Any] = {"state": report.state, "differences": report.differences, "checked_at": now}
    if report.gone:
        values["differences"] = [{"field": "gone", "portal": report.link.network.name, "neutron": report.gone}]
    if synced:
        values["synced_at"] = now
    if report.neutron_name is not None:
        values["neutron_name"] = report.neutron_name
    NeutronLink.objects.filter(pk=report.link.pk).update(**values)
    for key, value in values.items():
        setattr(report.link, key, value)


def neutron_diff(*, actor: Actor, cloud: Cloud) -> DiffReport:
    """Compare every mirrored network with Neutron now (recorded on the links), and list the Neutron
    networks that no portal network mirrors yet. Nothing is changed on the portal's networks."""
    require_admin(actor, "Only administrators compare networks with a cloud.")
    found = _fetch_all(cloud)
    reports = []
    for link in NeutronLink.objects.filter(cloud=cloud).select_related("network"):
        report = _compare(link, found)
        _record(report)
        reports.append(report)
    linked = {r.link.neutron_network_id for r in reports}
    not_mirrored = sorted((n for n in found.values() if n.id not in linked), key=lambda n: (n.name, n.id))
    return DiffReport(links=reports, not_mirrored=not_mirrored)


def neutron_link_get(cloud: Cloud, network: Network | str) -> NeutronLink:
    key = network.pk if isinstance(network, Network) else None
    qs = NeutronLink.objects.filter(cloud=cloud).select_related("network")
    link = qs.filter(network_id=key).first() if key is not None else qs.filter(network__name=str(network)).first()
    if link is None:
        raise NotFound(f"Network {getattr(network, 'name', network)} does not mirror a Neutron network of cloud "
                       f"{cloud.name}.")
    return link


def neutron_sync(*, actor: Actor, via: str, cloud: Cloud, network: Network | str | None = None) -> list[LinkReport]:
    """Apply Neutron's current definition to the mirrored networks (all, or one): each through
    networks.network_update. A network whose addresses cannot change now (VMs use it) keeps them and says
    so; the others are still applied. Links whose Neutron side is gone are reported, never applied."""
    require_admin(actor, "Only administrators re-sync networks with a cloud.")
    links = [neutron_link_get(cloud, network)] if network is not None else list(
        NeutronLink.objects.filter(cloud=cloud).select_related("network"))
    found = _fetch_all(cloud)
    reports = []
    for link in links:
        report = _compare(link, found)
        if report.state == NeutronLink.State.DIFFERS:
            changes = {d["field"]: d["neutron"] for d in report.differences}
            try:
                network_update(actor=actor, via=via, network=link.network, **changes)
            except PortalError as exc:
                report.error = f"Not applied to network {link.network.name}: {exc.message}"
            else:
                report.applied = sorted(changes)
                link.network.refresh_from_db()
                report = LinkReport(link=link, state=NeutronLink.State.IN_SYNC, differences=[],
                                    applied=report.applied, neutron_name=report.neutron_name)
                audit(actor=actor, via=via, action="cloud.neutron.sync", target=link.network,
                      message=f"Re-synced network {link.network.name} with Neutron network "
                              f"{link.neutron_name or link.neutron_network_id} of cloud {cloud.name}: "
                              f"{', '.join(report.applied)}",
                      data={"cloud": cloud.name, "fields": report.applied})
        _record(report, synced=report.state == NeutronLink.State.IN_SYNC)
        reports.append(report)
    return reports


def neutron_unlink(*, actor: Actor, via: str, link: NeutronLink) -> None:
    """Forget that a portal network mirrors a Neutron network (the portal network stays as it is)."""
    require_admin(actor, "Only administrators unlink networks.")
    name, neutron = link.network.name, link.neutron_name or link.neutron_network_id
    network = link.network
    link.delete()
    audit(actor=actor, via=via, action="cloud.neutron.unlink", target=network,
          message=f"Network {name} no longer mirrors Neutron network {neutron} of cloud {link.cloud.name}")


def mirror_text(network: Network) -> str:
    """For the networks admin's "mirrors" column (registered by clouds)."""
    link = NeutronLink.objects.filter(network=network).select_related("cloud").first()
    if link is None:
        return ""
    return f"Neutron {link.cloud.name}:{link.neutron_name or link.neutron_network_id} ({link.get_state_display()})"
