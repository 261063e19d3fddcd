"""Hypervisor hosts from the command line, through cluster.services and cluster.hostconfig.

    manage.py host [--user U] add NAME URI [--cluster C] [--tags a,b] [--migration-uri U] [--display-address A]
                                           [--domain-type auto|kvm|qemu] [--disabled]
    manage.py host [--user U] list
    manage.py host [--user U] show NAME
    manage.py host [--user U] set NAME [--cluster C] [--tags a,b] [--migration-uri U] [--display-address A]
                                       [--max-jobs N] [--power-on CMD] [--power-off CMD] [--power-status CMD]
                                       [--enable|--disable]

Without --user the command acts as the system (an administrator at the server's shell); with it, the
user must be an administrator. Every change is audited. Errors go to stderr with the exit status of
their kind (README.md, "Command line"). An empty value clears a setting (`--display-address ""`).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from cluster import hostconfig, services
from cluster.choices import DomainType
from cluster.models import Host
from cluster.placement import HostLoad, host_loads
from cluster.selectors import host_get, host_list
from portal.actors import require_admin
from portal.choices import Via
from portal.cli import VerbCommand
from portal.exceptions import ValidationFailed
from portal.units import mib

# option name -> host setting (cluster.hostconfig.CONFIG_FIELDS)
SETTING_OPTIONS = {"cluster": "cluster", "tags": "tags", "migration_uri": "migration_uri",
                   "display_address": "display_address", "max_jobs": "max_jobs", "power_on": "power_on_command",
                   "power_off": "power_off_command", "power_status": "power_status_command"}


def _settings_arguments(parser: CommandParser, *, add: bool) -> None:
    parser.add_argument("--cluster", help="Cluster name (default for a new host: Default).")
    parser.add_argument("--tags", help="Comma-separated labels VMs can require, e.g. ssd,gpu.")
    parser.add_argument("--migration-uri", help="How other hosts' libvirtd reach this one, e.g. "
                                                "qemu+tcp://10.0.0.2/system.")
    parser.add_argument("--display-address", help="Where its VNC displays listen and the console relay dials "
                                                  "(required for screen consoles of a host that is not this machine).")
    if add:
        return
    parser.add_argument("--max-jobs", help="Jobs that may talk to this host at once (1-64).")
    parser.add_argument("--power-on", help="Power agent: command that powers the host on (absolute path first).")
    parser.add_argument("--power-off", help="Power agent: command that powers it off (fences it).")
    parser.add_argument("--power-status", help="Power agent: command that exits 0 while it is powered on.")
    state = parser.add_mutually_exclusive_group()
    state.add_argument("--enable", action="store_true", help="Place new VMs on it.")
    state.add_argument("--disable", action="store_true", help="No new VMs on it (running ones stay).")


def _settings(opts: dict[str, Any]) -> dict[str, Any]:
    return {field: opts[option] for option, field in SETTING_OPTIONS.items() if opts.get(option) is not None}


class Command(VerbCommand):
    help = "Hypervisor hosts: add (register), list with capacity and load, show, set their settings."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", help="Act as this portal user, an administrator (default: the system).")
        sub = parser.add_subparsers(dest="verb", required=True)
        add = sub.add_parser("add", help="Register a host (its facts are read, the portal's pool is made).")
        add.add_argument("name")
        add.add_argument("uri", help=hostconfig.URI_HELP)
        add.add_argument("--domain-type", default=DomainType.AUTO, choices=DomainType.values)
        add.add_argument("--disabled", action="store_true", help="Register it without placing new VMs on it.")
        add.add_argument("--storage-dir", metavar="PATH",
                         help="Directory on the host for the portal's storage pool (default: PORTAL_STORAGE_DIR), "
                              "e.g. an NFS mount; mark it shared with manage.py pool set.")
        _settings_arguments(add, add=True)
        sub.add_parser("list", help="Hosts with cluster, status, capacity and load.")
        sub.add_parser("show", help="One host: every setting and fact.").add_argument("name")
        change = sub.add_parser("set", help="Change a host's settings (audited).")
        change.add_argument("name")
        _settings_arguments(change, add=False)


    def _add(self, actor: Any, opts: dict[str, Any]) -> None:
        uri = hostconfig.host_uri_check(opts["uri"])
        known = Host.objects.filter(uri=uri).exclude(name=opts["name"]).values_list("name", flat=True).first()
        if known is not None:  # `add` never renames a host behind the administrator's back
            raise ValidationFailed(f"{uri} is already registered as host {known!r}.", field="uri")
        changes = _settings(opts)
        # Every setting is checked before the host is registered, so a typo registers nothing.
        hostconfig.host_settings_clean(host=Host(name=opts["name"], uri=uri), changes=changes)
        host = services.host_register(actor=actor, via=Via.CLI, name=opts["name"], uri=uri,
                                      domain_type=opts["domain_type"], storage_dir=opts.get("storage_dir"))
        if opts["disabled"]:
            host = services.host_set_enabled(actor=actor, via=Via.CLI, host=host, enabled=False)
        if changes:
            host = hostconfig.host_configure(actor=actor, via=Via.CLI, host=host, **changes)
        host = host_get(name_or_id=host.pk)
        if host.last_error:
            self.stdout.write(f"Registered {host.name}, but it is {host.status}: {host.last_error}")
        else:
            self.stdout.write(f"Registered {host.name} in cluster {host.cluster}: {host.status}, {host.cpus} CPUs, "
                              f"{mib(host.memory_mib)}.")
        # the storage app's pools, through the reverse relation (cluster imports no storage)
        pools = ", ".join(f"{name} at {path}" for name, path in host.pools.values_list("name", "path"))  # type: ignore[attr-defined]
        if pools:
            self.stdout.write(f"Storage pools: {pools}.")

    def _list(self, actor: Any, opts: dict[str, Any]) -> None:
        require_admin(actor, "Only administrators see hosts.")
        hosts = list(host_list().select_related("cluster"))
        if not hosts:
            self.stdout.write("No hosts.")
            return
        loads = host_loads()
        self.stdout.write(f"{'NAME':<16} {'CLUSTER':<12} {'STATUS':<15} {'CPUS':>4} {'MEMORY USED/TOTAL':>20} "
                          f"{'COMMITTED':>16} {'RUNNING':>7} {'CPU%':>5} {'VMS':>4}")
        for h in hosts:
            load = loads.get(h.pk, HostLoad())
            used = f"{mib(max(0, h.memory_mib - h.free_memory_mib))}/{mib(h.memory_mib)}" if h.memory_mib else "-"
            committed = (f"{mib(load.memory_mib)} ({100 * load.memory_mib / h.memory_mib:.0f}%)" if h.memory_mib
                         else mib(load.memory_mib))
            cpu = "-" if h.cpu_usage_percent is None else f"{h.cpu_usage_percent:.0f}"
            status = h.status + ("" if h.enabled else ",disabled")
            self.stdout.write(f"{h.name:<16} {str(h.cluster or '-'):<12} {status:<15} {h.cpus:>4} {used:>20} "
                              f"{committed:>16} {h.running_domains:>7} {cpu:>5} {load.vms:>4}")

    def _show(self, actor: Any, opts: dict[str, Any]) -> None:
        require_admin(actor, "Only administrators see hosts.")
        h = host_get(name_or_id=opts["name"])
        load = host_loads().get(h.pk, HostLoad())
        display = hostconfig.host_display_address(h)
        rows = [
            ("name", h.name), ("uri", h.uri), ("cluster", h.cluster or "-"), ("enabled", h.enabled),
            ("status", f"{h.status} (since {h.status_changed_at or '?'})"), ("tags", ",".join(h.tags) or "-"),
            ("migration uri", h.migration_uri or "-"),
            ("display address", display or "none: no screen console (set --display-address)"),
            ("cpus", h.cpus), ("memory", f"{mib(h.memory_mib)} ({mib(h.free_memory_mib)} free)"),
            ("committed", f"{mib(load.memory_mib)}, {load.vcpus} vCPUs, {load.vms} VM(s)"),
            ("running domains", h.running_domains),
            ("cpu usage", "-" if h.cpu_usage_percent is None else f"{h.cpu_usage_percent:.0f}%"),
            ("max jobs", h.max_jobs), ("failures", h.failures), ("last seen", h.last_seen_at or "-"),
            ("last error", h.last_error or "-"), ("confirmed down", h.confirmed_down_at or "-"),
            ("power agent", "configured" if any(getattr(h, f) for f in hostconfig.POWER_FIELDS) else "none"),
        ]
        for key, value in rows:
            self.stdout.write(f"{key + ':':<17} {value}")

    def _set(self, actor: Any, opts: dict[str, Any]) -> None:
        host = host_get(name_or_id=opts["name"])
        changes = _settings(opts)
        if not changes and not (opts["enable"] or opts["disable"]):
            raise CommandError("Nothing to change: give at least one option (see manage.py host set --help).",
                               returncode=2)
        if changes:
            host = hostconfig.host_configure(actor=actor, via=Via.CLI, host=host, **changes)
        if opts["enable"] or opts["disable"]:
            host = services.host_set_enabled(actor=actor, via=Via.CLI, host=host, enabled=bool(opts["enable"]))
        self.stdout.write(f"{host.name}: " + (", ".join(f"{k.replace('_', ' ')} set" for k in changes) or "")
                          + ("" if not (opts["enable"] or opts["disable"])
                             else f"{', ' if changes else ''}{'enabled' if host.enabled else 'disabled'}"))

