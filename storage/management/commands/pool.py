"""`manage.py pool list|add|set`: the storage pools of the hosts, through storage.services (pool_add,
pool_configure: administrators only, audited). A pool marked shared is the same storage at the same path on
every host (NFS): disks on it migrate without copying and its VMs can restart elsewhere (HA)."""

from __future__ import annotations

import argparse
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from cluster.selectors import host_get
from portal.actors import require_admin
from portal.choices import Via
from portal.exceptions import NotFound, PortalError, admin_message, user_message
from storage import services
from storage.models import StoragePool


def _pool(host_name: str, name: str) -> StoragePool:
    host = host_get(name_or_id=host_name)
    pool = StoragePool.objects.filter(host=host, name=name).select_related("host").first()
    if pool is None:
        raise NotFound(f"Host {host.name} has no pool {name[:100]!r} (see manage.py pool list).")
    return pool


class Command(BaseCommand):
    help = "Storage pools of the hosts: list, add one (made in libvirt on the host), mark shared or host-local."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", help="Act as this portal user, an administrator (default: the system).")
        sub = parser.add_subparsers(dest="verb", required=True)
        sub.add_parser("list", help="Pools with host, path, shared, images and disks.")
        add = sub.add_parser("add", help="Make a dir pool on a host and list it (audited).")
        add.add_argument("host")
        add.add_argument("name")
        add.add_argument("path", help="Absolute directory on the host, e.g. /srv/nfs/vmportal (libvirt makes it).")
        add.add_argument("--shared", action="store_true",
                         help="The same storage at the same path on every host (e.g. NFS).")
        change = sub.add_parser("set", help="Mark a pool shared or host-local (audited).")
        change.add_argument("host")
        change.add_argument("name")
        change.add_argument("--shared", action=argparse.BooleanOptionalAction, default=None,
                            help="--shared: the same storage on every host that has this pool at this path; "
                                 "--no-shared: host-local.")

    def handle(self, *args: Any, user: str | None = None, verb: str, **opts: Any) -> None:
        actor = None
        if user:
            actor = get_user_model().objects.filter(username=user).first()
            if actor is None:
                raise CommandError(f"No user {user!r}.", returncode=NotFound.exit_code)
        try:
            getattr(self, f"_{verb}")(actor, opts)
        except PortalError as exc:
            text = admin_message(exc) if actor is None else user_message(exc, user=actor)
            raise CommandError(text, returncode=exc.exit_code) from None

    def _list(self, actor: Any, opts: dict[str, Any]) -> None:
        require_admin(actor, "Only administrators see storage pools.")
        pools = list(StoragePool.objects.select_related("host").order_by("host__name", "name"))
        if not pools:
            self.stdout.write("No pools.")
            return
        self.stdout.write(f"{'HOST':<16} {'NAME':<20} {'SHARED':<6} {'IMAGES':>6} {'DISKS':>5} PATH")
        for p in pools:
            self.stdout.write(f"{p.host.name:<16} {p.name:<20} {'yes' if p.shared else 'no':<6} "
                              f"{p.images.count():>6} {p.volumes.count():>5} {p.path}")

    def _add(self, actor: Any, opts: dict[str, Any]) -> None:
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
