"""Neutron networks of a cloud from the command line, through clouds.neutron (docs/openstack.md,
"Neutron networks").

`manage.py neutron --user ADMIN networks CLOUD | import CLOUD NEUTRON-ID [--name --mode --bridge --host …]
| diff CLOUD | sync CLOUD [--network NAME] | unlink CLOUD NETWORK`: the same rules and audit as the admin and
the API. Errors go to stderr with the exit status of their kind (README.md, "Command line"); a sync that
could not apply a network's changes exits non-zero after saying what was applied elsewhere.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from clouds import neutron
from clouds.models import NeutronLink
from clouds.selectors import cloud_get
from networks.models import Network
from portal.choices import Via
from portal.cli import VerbCommand
from portal.exceptions import Conflict


def _pools(subnet: neutron.NeutronSubnet) -> str:
    return ",".join(f"{p['start']}-{p['end']}" for p in subnet.allocation_pools) or "-"


def _diff_lines(differences: list[dict[str, Any]]) -> list[str]:
    return [f"    {d['field']}: portal {d['portal']!r} → Neutron {d['neutron']!r}" for d in differences]


class Command(VerbCommand):
    help = ("Neutron networks of a cloud, as an administrator: list them, import one as a portal network, "
            "show differences, re-sync, unlink.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="Act as this portal user (an administrator).")
        sub = parser.add_subparsers(dest="verb", required=True)
        sub.add_parser("networks", help="Neutron networks, their subnets and the portal network that mirrors "
                                        "each.").add_argument("cloud")
        imp = sub.add_parser("import", help="Create the portal network that mirrors a Neutron network.")
        imp.add_argument("cloud")
        imp.add_argument("neutron_id", metavar="NEUTRON-ID")
        imp.add_argument("--name", default=None, help="The portal network's name (default: from Neutron's).")
        imp.add_argument("--mode", default="isolated", choices=Network.Mode.values)
        imp.add_argument("--bridge", default="", help="Bridged: the existing host bridge, e.g. br0.")
        imp.add_argument("--host", action="append", default=None, dest="hosts",
                         help="A host (repeatable); not given: every enabled host.")
        imp.add_argument("--group", action="append", default=[], dest="groups",
                         help="A group whose members may use it (repeatable).")
        imp.add_argument("--public", action="store_true", help="Open to all users.")
        imp.add_argument("--subnet", default=None, help="Which IPv4 subnet (default: the first).")
        sub.add_parser("diff", help="Compare every mirrored network with Neutron now (nothing is "
                                    "changed).").add_argument("cloud")
        sync = sub.add_parser("sync", help="Apply Neutron's definition to the mirrored networks.")
        sync.add_argument("cloud")
        sync.add_argument("--network", default=None, help="Only this portal network.")
        unlink = sub.add_parser("unlink", help="The portal network no longer mirrors Neutron (it stays).")
        unlink.add_argument("cloud")
        unlink.add_argument("network")

    def run_verb(self, actor: Any, verb: str, opts: dict[str, Any]) -> None:
        cloud = cloud_get(actor=actor, key=opts["cloud"])
        getattr(self, f"_{verb}")(actor, cloud, opts)

    def _networks(self, actor: Any, cloud: Any, opts: dict) -> None:
        found = neutron.neutron_networks(actor=actor, cloud=cloud)
        if not found:
            self.stdout.write(f"Cloud {cloud.name} has no Neutron networks.")
        for n in found:
            mirror = f"mirrored by {n.mirrored_by.name} ({n.link.get_state_display()})" if n.link else "not mirrored"
            self.stdout.write(f"{n.id}  {n.name or '-'}  {mirror}")
            for s in n.subnets:
                if s.usable:
                    self.stdout.write(f"    subnet {s.cidr} gateway {s.gateway_ip or '-'} pools {_pools(s)} "
                                      f"dns {','.join(s.dns_nameservers) or '-'}{'' if s.enable_dhcp else ' no-dhcp'}")
                else:
                    self.stdout.write(f"    subnet {s.cidr} (IPv6: not mirrored)")

    def _import(self, actor: Any, cloud: Any, opts: dict) -> None:
        link = neutron.neutron_import(actor=actor, via=Via.CLI, cloud=cloud, neutron_network_id=opts["neutron_id"],
                                      name=opts["name"], mode=opts["mode"], bridge=opts["bridge"], hosts=opts["hosts"],
                                      groups=opts["groups"], is_public=opts["public"], subnet_id=opts["subnet"])
        net = link.network
        self.stdout.write(f"Imported Neutron network {link.neutron_name or link.neutron_network_id} as network "
                          f"{net.name} ({net.mode}{', ' + net.cidr if net.cidr else ''}) on "
                          f"{', '.join(h.name for h in net.hosts.order_by('name')) or 'no host'}.")
        for note in link.notes:
            self.stdout.write(f"  note: {note}")

    def _diff(self, actor: Any, cloud: Any, opts: dict) -> None:
        report = neutron.neutron_diff(actor=actor, cloud=cloud)
        for r in report.links:
            self.stdout.write(f"{r.link.network.name}  {NeutronLink.State(r.state).label}"
                              f"{': ' + r.gone if r.gone else ''}")
            for line in _diff_lines(r.differences):
                self.stdout.write(line)
        for n in report.not_mirrored:
            self.stdout.write(f"not mirrored: {n.id}  {n.name or '-'}")
        if not report.links and not report.not_mirrored:
            self.stdout.write(f"Cloud {cloud.name} has no Neutron networks.")

    def _sync(self, actor: Any, cloud: Any, opts: dict) -> None:
        reports = neutron.neutron_sync(actor=actor, via=Via.CLI, cloud=cloud, network=opts["network"])
        failed = []
        for r in reports:
            name = r.link.network.name
            if r.error:
                failed.append(name)
                self.stdout.write(f"{name}  not applied: {r.error}")
            elif r.gone:
                self.stdout.write(f"{name}  {r.gone} Not applied: unlink it or delete the network yourself.")
            elif r.applied:
                self.stdout.write(f"{name}  applied: {', '.join(r.applied)}")
            else:
                self.stdout.write(f"{name}  in sync")
        if failed:
            raise Conflict(f"Not applied to: {', '.join(failed)} (see above).")

    def _unlink(self, actor: Any, cloud: Any, opts: dict) -> None:
        link = neutron.neutron_link_get(cloud, opts["network"])
        neutron.neutron_unlink(actor=actor, via=Via.CLI, link=link)
        self.stdout.write(f"Network {opts['network']} no longer mirrors a Neutron network of {cloud.name}.")
