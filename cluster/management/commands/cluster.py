"""`manage.py cluster add|list|set`: clusters and their scheduling settings, through cluster.clusters (the same
rules and audit as the admin). Errors go to stderr with the exit status of their kind (README, "Command line")."""

from __future__ import annotations

import argparse
import json
from typing import Any

from django.core.management.base import CommandError, CommandParser

from cluster import clusters
from cluster.selectors import cluster_get, cluster_list
from portal.actors import require_admin
from portal.choices import Via
from portal.cli import VerbCommand
from portal.exceptions import ValidationFailed

# option -> cluster_update keyword
SWITCHES = {"balancing": "balancing_enabled", "power_saving": "power_saving_enabled", "ha": "ha_enabled"}


def _settings_arguments(parser: CommandParser) -> None:
    parser.add_argument("--description")
    parser.add_argument("--policy", help="Scheduling policy: " + ", ".join(clusters.policy_names()) + ".")
    parser.add_argument("--properties", metavar="JSON",
                        help='Policy properties, a JSON object, e.g. \'{"high_utilization": 80}\' (replaces them).')
    parser.add_argument("--balancing", action=argparse.BooleanOptionalAction, default=None,
                        help="Run the policy's balancer periodically (live migrations).")
    parser.add_argument("--power-saving", action=argparse.BooleanOptionalAction, default=None,
                        help="Put empty hosts on standby, wake them when capacity runs short (power agents).")
    parser.add_argument("--ha", action=argparse.BooleanOptionalAction, default=None,
                        help="Restart highly available VMs of a confirmed-down host elsewhere.")


def _settings(opts: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {field: opts[option] for option, field in SWITCHES.items() if opts.get(option) is not None}
    for option in ("description", "policy"):
        if opts.get(option) is not None:
            changes[option] = opts[option]
    if opts.get("properties") is not None:
        try:
            changes["policy_properties"] = json.loads(opts["properties"]) if opts["properties"].strip() else {}
        except json.JSONDecodeError as exc:
            raise ValidationFailed(f"--properties is not JSON: {exc.msg} (e.g. '{{\"high_utilization\": 80}}').",
                                   field="policy_properties") from None
    return changes


class Command(VerbCommand):
    help = "Clusters: add one, list them, change their policy and switches (balancing, power saving, HA)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", help="Act as this portal user, an administrator (default: the system).")
        sub = parser.add_subparsers(dest="verb", required=True)
        add = sub.add_parser("add", help="Create a cluster (audited); then put hosts in it: host add/set --cluster.")
        add.add_argument("name")
        _settings_arguments(add)
        sub.add_parser("list", help="Clusters with policy, switches and hosts.")
        change = sub.add_parser("set", help="Change a cluster's name, policy, properties or switches (audited).")
        change.add_argument("name")
        change.add_argument("--rename", metavar="NEW_NAME")
        _settings_arguments(change)


    def _describe(self, c: Any) -> str:
        switches = ", ".join(f"{label} {'on' if getattr(c, field) else 'off'}" for label, field in
                             (("balancing", "balancing_enabled"), ("power saving", "power_saving_enabled"),
                              ("HA", "ha_enabled")))
        return f"{c.name}: policy {c.policy}, {switches}" + (f", properties {json.dumps(c.policy_properties)}"
                                                            if c.policy_properties else "")

    def _add(self, actor: Any, opts: dict[str, Any]) -> None:
        cluster = clusters.cluster_create(actor=actor, via=Via.CLI, name=opts["name"], **_settings(opts))
        self.stdout.write("Created " + self._describe(cluster))

    def _list(self, actor: Any, opts: dict[str, Any]) -> None:
        require_admin(actor, "Only administrators see clusters.")
        rows = list(cluster_list().order_by("name"))
        if not rows:
            self.stdout.write("No clusters.")
            return
        self.stdout.write(f"{'NAME':<16} {'POLICY':<20} {'BALANCING':<9} {'POWER-SAVING':<12} {'HA':<3} HOSTS")
        for c in rows:
            hosts = ",".join(sorted(h.name for h in c.hosts.all())) or "-"
            self.stdout.write(f"{c.name:<16} {c.policy:<20} {'on' if c.balancing_enabled else 'off':<9} "
                              f"{'on' if c.power_saving_enabled else 'off':<12} {'on' if c.ha_enabled else 'off':<3} "
                              f"{hosts}")

    def _set(self, actor: Any, opts: dict[str, Any]) -> None:
        cluster = cluster_get(name_or_id=opts["name"])
        changes = _settings(opts)
        if opts.get("rename") is not None:
            changes["name"] = opts["rename"]
        if not changes:
            raise CommandError("Nothing to change: give at least one option (see manage.py cluster set --help).",
                               returncode=2)
        cluster = clusters.cluster_update(actor=actor, via=Via.CLI, cluster=cluster, **changes)
        self.stdout.write("Updated " + self._describe(cluster))
