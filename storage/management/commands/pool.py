"""`manage.py pool list|domains|add|set|refresh|remove`: the storage pools of the hosts and the storage domains
they make, through storage.services (pool_add, pool_configure) and storage.domains (domain_add, domain_refresh,
domain_remove): administrators only, audited. A pool marked shared is the same storage at the same path on
every host (NFS): disks on it migrate without copying and its VMs can restart elsewhere (HA)."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import CommandError, CommandParser

from cluster.selectors import host_get
from portal.actors import require_admin
from portal.choices import Via
from portal.cli import VerbCommand
from portal.exceptions import NotFound
from storage import domains, services
from storage.models import StoragePool


def _pool(host_name: str, name: str) -> StoragePool:
    host = host_get(name_or_id=host_name)
    pool = StoragePool.objects.filter(host=host, name=name).select_related("host").first()
    if pool is None:
        raise NotFound(f"Host {host.name} has no pool {name[:100]!r} (see manage.py pool list).")
    return pool


def _gib(size: int) -> str:
    return f"{size / 1024**3:.1f} GiB"


class Command(VerbCommand):
    help = ("Storage pools of the hosts and the storage domains they make: list, add (made in libvirt on the hosts), "
            "mark shared or host-local, refresh capacity, remove.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", help="Act as this portal user, an administrator (default: the system).")
        sub = parser.add_subparsers(dest="verb", required=True)
        sub.add_parser("list", help="Pools with host, path, shared, images and disks.")
        sub.add_parser("domains", help="Storage domains: kind, content, capacity and use, the hosts that see each.")
        add = sub.add_parser("add", help="Make a pool (a storage domain) on one or more hosts and list it (audited).")
        add.add_argument("host", help="A host, or several: HOST,HOST,...")
        add.add_argument("name")
        add.add_argument("path", nargs="?", default="",
                         help="Absolute directory on the host(s), inside PORTAL_STORAGE_ALLOWED_ROOTS, e.g. "
                              "/srv/nfs/vmportal (libvirt makes it; a GlusterFS mount point: default "
                              "PORTAL_STORAGE_MOUNT_DIR/NAME).")
        add.add_argument("--shared", action="store_true",
                         help="The same storage at the same path on every host (e.g. NFS); same as --kind shared.")
        add.add_argument("--kind", choices=StoragePool.Kind.values, default=None,
                         help="dir (a local directory), shared (mounted at the same path on every host) or "
                              "glusterfs (a GlusterFS volume libvirt mounts).")
        add.add_argument("--content", choices=StoragePool.Content.values, default=None,
                         help="data (images and disks, default) or backup.")
        add.add_argument("--source-host", default="", help="glusterfs: the server to mount from.")
        add.add_argument("--source-name", default="", help="glusterfs: the volume's name.")
        refresh = sub.add_parser("refresh", help="Read capacity and use from libvirt (one domain or all).")
        refresh.add_argument("name", nargs="?", default=None)
        remove = sub.add_parser("remove", help="Remove a storage domain (refused while in use; files stay).")
        remove.add_argument("name")
        remove.add_argument("--host", default=None, help="Only from this host (default: from every host).")
        change = sub.add_parser("set", help="Mark a pool shared or host-local (audited).")
        change.add_argument("host")
        change.add_argument("name")
        change.add_argument("--shared", action=argparse.BooleanOptionalAction, default=None,
                            help="--shared: the same storage on every host that has this pool at this path; "
                                 "--no-shared: host-local.")


    def _list(self, actor: Any, opts: dict[str, Any]) -> None:
        require_admin(actor, "Only administrators see storage pools.")
        pools = list(StoragePool.objects.select_related("host").order_by("host__name", "name"))
        if not pools:
            self.stdout.write("No pools.")
            return
        self.stdout.write(f"{'HOST':<16} {'NAME':<20} {'KIND':<9} {'CONTENT':<7} {'SHARED':<6} {'IMAGES':>6} "
                          f"{'DISKS':>5} {'SIZE':>9} {'USED':>9} {'FREE':>9} PATH")
        for p in pools:
            self.stdout.write(f"{p.host.name:<16} {p.name:<20} {p.kind:<9} {p.content:<7} "
                              f"{'yes' if p.shared else 'no':<6} {p.images.count():>6} {p.volumes.count():>5} "
                              f"{_gib(p.capacity_bytes):>9} {_gib(p.allocation_bytes):>9} "
                              f"{_gib(p.available_bytes):>9} {p.path}"
                              + ("" if p.active else f"  (not running: {p.last_error or 'stopped'})"))

    def _domains(self, actor: Any, opts: dict[str, Any]) -> None:
        require_admin(actor, "Only administrators see storage domains.")
        found = domains.domain_list()
        if not found:
            self.stdout.write("No storage domains.")
            return
        self.stdout.write(f"{'NAME':<20} {'KIND':<9} {'CONTENT':<7} {'SIZE':>9} {'USED':>9} {'FREE':>9} HOSTS")
        for d in found:
            self.stdout.write(f"{d.name:<20} {d.kind:<9} {d.content:<7} {_gib(d.capacity_bytes):>9} "
                              f"{_gib(d.allocation_bytes):>9} {_gib(d.available_bytes):>9} "
                              f"{', '.join(h.name for h in d.hosts)}"
                              + ("" if d.active else "  (not running on every host)"))

    def _refresh(self, actor: Any, opts: dict[str, Any]) -> None:
        for d in domains.domain_refresh(actor=actor, via=Via.CLI, name=opts["name"]):
            self.stdout.write(f"{d.name}: {_gib(d.allocation_bytes)} used of {_gib(d.capacity_bytes)}, "
                              f"{_gib(d.available_bytes)} free" + "".join(f"; {e}" for e in d.errors))

    def _remove(self, actor: Any, opts: dict[str, Any]) -> None:
        host = host_get(name_or_id=opts["host"]) if opts["host"] else None
        count = domains.domain_remove(actor=actor, via=Via.CLI, name=opts["name"], host=host)
        where = f" from {host.name}" if host else f" from {count} host{'s' if count != 1 else ''}"
        self.stdout.write(f"Removed storage domain {opts['name']}{where} (its files stay).")

    def _add(self, actor: Any, opts: dict[str, Any]) -> None:
        names = [n.strip() for n in opts["host"].split(",") if n.strip()]
        if opts["kind"] or opts["content"] or opts["source_host"] or opts["source_name"] or len(names) != 1:
            hosts = [host_get(name_or_id=n) for n in names]
            kind = opts["kind"] or (StoragePool.Kind.SHARED if opts["shared"] else StoragePool.Kind.DIR)
            pools = domains.domain_add(actor=actor, via=Via.CLI, name=opts["name"], kind=kind, hosts=hosts,
                                       path=opts["path"], content=opts["content"] or StoragePool.Content.DATA,
                                       source_host=opts["source_host"], source_name=opts["source_name"])
            first = pools[0]
            self.stdout.write(f"Added storage domain {first.name} ({first.kind}, {first.content}) on "
                              f"{', '.join(p.host.name for p in pools)} at {first.path}: "
                              f"{_gib(first.available_bytes)} free of {_gib(first.capacity_bytes)}.")
            return
        host = host_get(name_or_id=opts["host"])
        pool = services.pool_add(actor=actor, via=Via.CLI, host=host, name=opts["name"], path=opts["path"],
                                 shared=opts["shared"])
        self.stdout.write(f"Added pool {pool.name} on {host.name} at {pool.path}"
                          + (" (shared)." if pool.shared else " (host-local)."))

    def _set(self, actor: Any, opts: dict[str, Any]) -> None:
        if opts["shared"] is None:
            raise CommandError("Nothing to change: give --shared or --no-shared.", returncode=2)
        pool = services.pool_configure(actor=actor, via=Via.CLI, pool=_pool(opts["host"], opts["name"]),
                                       shared=opts["shared"])
        self.stdout.write(f"Pool {pool.name} on {pool.host.name}: {'shared' if pool.shared else 'host-local'}.")
