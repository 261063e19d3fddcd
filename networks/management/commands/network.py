"""Manage networks from the command line, as an administrator, through networks.services.

`manage.py network --user ADMIN list|show|create|delete|reserve|unreserve …`: the same rules, audit and
libvirt work as the admin pages. Errors go to stderr with the exit status of their kind (the table in
README.md, "Command line"), like `manage.py vm`.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from networks import selectors, services
from networks.models import Network
from networks.usage import network_users
from portal.choices import Via
from portal.cli import VerbCommand

MODES = {"isolated": "isolated", "nat": "NAT", "bridge": "bridged"}


class Command(VerbCommand):
    help = ("Networks, as an administrator: list, show, create, delete; reserve and unreserve DHCP addresses. "
            "Every change is defined on the network's hosts at once and audited under --user.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="Act as this portal user (an administrator for changes).")
        sub = parser.add_subparsers(dest="verb", required=True)
        sub.add_parser("list", help="Networks (all of them for administrators; the usable ones for others).")
        sub.add_parser("show", help="One network: hosts, access, reservations, NICs.").add_argument("name")
        create = sub.add_parser("create", help="Add a network and define it on its hosts.")
        create.add_argument("name")
        create.add_argument("--mode", default="isolated", help="isolated (default), nat or bridge.")
        create.add_argument("--cidr", default="", help="Address range of an isolated or NAT network, e.g. "
                                                       "10.100.0.0/24.")
        create.add_argument("--dhcp-start", default=None, help="First DHCP address (default: .10 of a /24).")
        create.add_argument("--dhcp-end", default=None, help="Last DHCP address (default: the last usable one).")
        create.add_argument("--gateway", default=None, help="The host's address on the network (default: the "
                                                            "subnet's first address).")
        create.add_argument("--dns", action="append", default=[], dest="dns_servers",
                            help="A DNS server the host forwards guests' queries to (repeatable).")
        create.add_argument("--bridge", default="", help="Bridged networks: the existing host bridge, e.g. br0.")
        create.add_argument("--host", action="append", default=[], dest="hosts",
                            help="A host to define it on (repeatable).")
        create.add_argument("--group", action="append", default=[], dest="groups",
                            help="A group whose members may use it (repeatable).")
        create.add_argument("--public", action="store_true", help="Open to all users.")
        create.add_argument("--default", action="store_true", help="Preselected for new VMs of users who may use it.")
        create.add_argument("--title", default="")
        create.add_argument("--description", default="")
        sub.add_parser("delete", help="Remove it from every host and the portal (refused while NICs use it).") \
            .add_argument("name")
        reserve = sub.add_parser("reserve", help="A static DHCP lease: the NIC with MAC always gets IP.")
        reserve.add_argument("name")
        reserve.add_argument("mac")
        reserve.add_argument("ip")
        reserve.add_argument("--hostname", default="")
        unreserve = sub.add_parser("unreserve", help="Remove a reservation, given by its MAC or its IP.")
        unreserve.add_argument("name")
        unreserve.add_argument("key", metavar="MAC|IP")


    # --- reading ---

    def _list(self, actor: Any, opts: dict) -> None:
        networks = list(selectors.network_usable(user=actor).prefetch_related("placements__host", "groups"))
        if not networks:
            self.stdout.write("No networks.")
            return
        default = selectors.network_default_for(user=actor)
        for n in networks:
            shape = n.cidr if n.cidr else f"bridge {n.bridge}"
            dhcp = f"{n.dhcp_start}-{n.dhcp_end}" if n.dhcp_start else "-"
            hosts = ",".join(f"{p.host.name}({_state(p)})" for p in sorted(n.placements.all(), key=lambda p: p.host.name))
            self.stdout.write(f"{n.name:<20} {MODES.get(n.mode, n.mode):<9} {shape:<18} {dhcp:<27} "
                              f"{hosts or 'no host':<24} {_access(n):<20} {len(network_users(n)):>3} NIC(s)"
                              f"{'  default' if default is not None and default.pk == n.pk else ''}")

    def _show(self, actor: Any, opts: dict) -> None:
        n = selectors.network_get(user=actor, key=opts["name"])
        rows = [
            ("name", n.name), ("title", n.title or "-"), ("mode", n.get_mode_display()),
            ("libvirt name", n.libvirt_name),
            ("address range", n.cidr or "-"), ("DHCP range", f"{n.dhcp_start} - {n.dhcp_end}" if n.dhcp_start else "-"),
            ("host address", n.gateway or ("-" if not n.cidr else "first address")),
            ("DNS servers", ", ".join(n.dns_servers or []) or "-"),
            ("bridge", n.bridge or "-"), ("access", _access(n)), ("default", "yes" if n.is_default else "no"),
        ]
        for label, value in rows:
            self.stdout.write(f"{label:<14} {value}")
        for p in selectors.network_placements(network=n):
            error = f"  {p.last_error}" if p.last_error else ""
            self.stdout.write(f"{'host':<14} {p.host.name} {_state(p)}{' bridge ' + p.bridge if p.bridge else ''}{error}")
        for r in n.reservations.all():
            self.stdout.write(f"{'reservation':<14} {r.mac} {r.ip}{' ' + r.hostname if r.hostname else ''}")
        for used_by in network_users(n):
            self.stdout.write(f"{'NIC of':<14} {used_by}")

    # --- changes (the services check that the actor is an administrator) ---

    def _create(self, actor: Any, opts: dict) -> None:
        network = services.network_create(
            actor=actor, via=Via.CLI, name=opts["name"], mode=opts["mode"], cidr=opts["cidr"],
            dhcp_start=opts["dhcp_start"], dhcp_end=opts["dhcp_end"], bridge=opts["bridge"], hosts=opts["hosts"],
            gateway=opts["gateway"], dns_servers=opts["dns_servers"],
            groups=opts["groups"], is_public=opts["public"], is_default=opts["default"], title=opts["title"],
            description=opts["description"])
        hosts = [p.host.name for p in selectors.network_placements(network=network)]
        where = f" on {', '.join(hosts)}" if hosts else " (on no host yet)"
        self.stdout.write(f"Created network {network.name} ({MODES.get(network.mode, network.mode)}"
                          f"{', ' + network.cidr if network.cidr else ''}){where}.")

    def _delete(self, actor: Any, opts: dict) -> None:
        network = selectors.network_get(user=actor, key=opts["name"])
        services.network_delete(actor=actor, via=Via.CLI, network=network)
        self.stdout.write(f"Deleted network {network.name}.")

    def _reserve(self, actor: Any, opts: dict) -> None:
        network = selectors.network_get(user=actor, key=opts["name"])
        r = services.reservation_add(actor=actor, via=Via.CLI, network=network, mac=opts["mac"], ip=opts["ip"],
                                     hostname=opts["hostname"])
        self.stdout.write(f"Reserved {r.ip} for {r.mac} on {network.name}.")

    def _unreserve(self, actor: Any, opts: dict) -> None:
        network = selectors.network_get(user=actor, key=opts["name"])
        r = selectors.network_reservation_get(network=network, key=opts["key"])
        services.reservation_remove(actor=actor, via=Via.CLI, reservation=r)
        self.stdout.write(f"Removed the reservation of {r.ip} for {r.mac} on {network.name}.")


def _state(placement: Any) -> str:
    return "error" if placement.last_error else ("active" if placement.active else "inactive")


def _access(network: Network) -> str:
    if network.is_public:
        return "everyone"
    names = sorted(g.name for g in network.groups.all())
    return "groups " + ",".join(names) if names else "administrators"
