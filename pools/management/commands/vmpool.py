"""VM pools from the command line, through pools.services (`manage.py pool` is the storage pools' command).

`manage.py vmpool --user NAME list|show|create|delete|take|return|replenish …`: the same rules and audit as
the web and the API. Errors go to stderr with the exit status of their kind (README.md, "Command line").
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from pools import selectors, services
from portal.choices import Via
from portal.cli import VerbCommand


class Command(VerbCommand):
    help = "VM pools: list, show, create, delete (administrators), take and return a VM, replenish now."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="Act as this portal user.")
        sub = parser.add_subparsers(dest="verb", required=True)
        sub.add_parser("list", help="Pools you may take from, with free and taken counts.")
        sub.add_parser("show", help="One pool and its VMs (administrators see who holds each).").add_argument("name")
        create = sub.add_parser("create", help="Define a pool (administrators).")
        create.add_argument("name")
        create.add_argument("--image", required=True, help="Image or template (name or id).")
        create.add_argument("--flavor", default=None)
        create.add_argument("--vcpus", default=None)
        create.add_argument("--memory-mib", default=None)
        create.add_argument("--disk-gib", default=None)
        create.add_argument("--prestarted", default=1, help="Free VMs kept running (K, default 1).")
        create.add_argument("--max-size", default=5, help="Most VMs the pool has (default 5).")
        create.add_argument("--keep-changes", action="store_true", help="Not stateless: returned VMs keep changes.")
        create.add_argument("--everyone", action="store_true", help="Every user may take a VM.")
        create.add_argument("--group", action="append", default=[], dest="groups",
                            help="A group whose members may take a VM (repeatable).")
        create.add_argument("--owner", default=None, help="Account owning the pool's VMs (default: you).")
        create.add_argument("--description", default="")
        sub.add_parser("delete", help="Delete a pool and its VMs (refused while any is taken).").add_argument("name")
        sub.add_parser("take", help="Take a free running VM of the pool.").add_argument("name")
        sub.add_parser("return", help="Return a VM you hold (by its numeric id).").add_argument("vm_id", type=int)
        sub.add_parser("replenish", help="Run the replenish pass for one pool now (administrators).") \
            .add_argument("name")


    def _list(self, actor: Any, opts: dict) -> None:
        pools = list(selectors.pool_list(user=actor))
        if not pools:
            self.stdout.write("No VM pools.")
        held = {m.pool_id: m.vm.name for m in selectors.pool_held(user=actor)}
        for p in pools:
            mine = f"  you hold {held[p.pk]}" if p.pk in held else ""
            self.stdout.write(f"{p.name}\timage={p.image.name}\tfree={p.n_free}\ttaken={p.n_taken}\t"
                              f"size={p.n_live}/{p.max_size}\t{'stateless' if p.stateless else 'keeps changes'}{mine}")

    def _show(self, actor: Any, opts: dict) -> None:
        pool = selectors.pool_get(user=actor, key=opts["name"])
        self.stdout.write(f"{pool.name}: image {pool.image.name}, K={pool.prestarted}, max {pool.max_size}, "
                          f"{'stateless' if pool.stateless else 'keeps changes'}, owner {pool.owner.get_username()}")
        if actor.is_staff:
            for m in selectors.pool_members(pool=pool):
                who = m.taken_by.get_username() if m.taken_by else "-"
                self.stdout.write(f"  {m.vm.pk}\t{m.vm.name}\t{m.vm.status}\t{who}")

    def _create(self, actor: Any, opts: dict) -> None:
        pool = services.pool_create(
            actor=actor, via=Via.CLI, name=opts["name"], image=opts["image"], flavor=opts["flavor"],
            vcpus=opts["vcpus"], memory_mib=opts["memory_mib"], disk_gib=opts["disk_gib"],
            prestarted=opts["prestarted"], max_size=opts["max_size"], stateless=not opts["keep_changes"],
            everyone=opts["everyone"], groups=opts["groups"], owner=opts["owner"], description=opts["description"])
        self.stdout.write(f"Created VM pool {pool.name}; its VMs are made by the next replenish pass.")

    def _delete(self, actor: Any, opts: dict) -> None:
        pool = selectors.pool_get(user=actor, key=opts["name"])
        queued = services.pool_delete(actor=actor, via=Via.CLI, pool=pool)
        self.stdout.write(f"Deleted VM pool {opts['name']}; deleting {queued} VM(s).")

    def _take(self, actor: Any, opts: dict) -> None:
        result = services.pool_take(actor=actor, via=Via.CLI, pool=opts["name"])
        self.stdout.write(f"{result.vm.pk}\t{result.vm.name}\t{result.message}")

    def _return(self, actor: Any, opts: dict) -> None:
        self.stdout.write(services.pool_return(actor=actor, via=Via.CLI, vm=opts["vm_id"]).message)

    def _replenish(self, actor: Any, opts: dict) -> None:
        if not actor.is_staff:
            raise CommandError("Only administrators replenish pools.", returncode=4)
        pool = selectors.pool_get(user=actor, key=opts["name"])
        created = services.pool_replenish(pool=pool)
        self.stdout.write(f"Created {', '.join(created)}." if created else "Nothing to create.")
