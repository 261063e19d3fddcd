"""External plugins' tokens from the command line, through portal.plugins.

    manage.py plugin-token [--user U] create NAME --scope all | --scope group:NAME [--scope group:NAME ...]
    manage.py plugin-token [--user U] list
    manage.py plugin-token [--user U] revoke NAME

`create` prints the token once (only its hash is kept). Scope `all`: every VM and host; `group:NAME`: the
VMs of that group (repeat for more groups; no hosts). Without --user the command acts as the system (an
administrator at the server's shell); with it, the user must be an administrator. Every change is audited.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from portal.choices import Via
from portal.cli import VerbCommand
from portal.exceptions import ValidationFailed
from portal.models import PluginToken
from portal.plugins import plugin_token_create, plugin_token_get, plugin_token_revoke


def _scope(values: list[str]) -> tuple[bool, list[str]]:
    """`all`, or `group:NAME` values, as (all_targets, group names)."""
    all_targets, groups = False, []
    for value in values:
        if value == "all":
            all_targets = True
        elif value.startswith("group:") and value[6:]:
            groups.append(value[6:])
        else:
            raise ValidationFailed(f"--scope: 'all' or 'group:NAME' (got {value[:80]!r}).", field="scope")
    return all_targets, groups


class Command(VerbCommand):
    help = "Issue, list and revoke external plugins' API tokens."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", help="Act as this administrator (default: the system).")
        verbs = parser.add_subparsers(dest="verb", required=True)
        create = verbs.add_parser("create", help="Issue a token (printed once).")
        create.add_argument("name")
        create.add_argument("--scope", action="append", default=[], metavar="all|group:NAME",
                            help="Where the plugin may attach jobs: all, or group:NAME (repeatable).")
        verbs.add_parser("list", help="Plugins, their scope and when their tokens were last used.")
        revoke = verbs.add_parser("revoke", help="Revoke a plugin's active token.")
        revoke.add_argument("name")


    def _create(self, actor: Any, opts: dict[str, Any]) -> None:
        all_targets, groups = _scope(opts["scope"])
        plugin, token = plugin_token_create(actor=actor, via=Via.CLI, name=opts["name"], all_targets=all_targets,
                                            groups=groups)
        self.stderr.write(f"Plugin {plugin.name}: token issued. It is shown once; keep it secret.")
        self.stdout.write(token)

    def _list(self, actor: Any, opts: dict[str, Any]) -> None:
        if actor is not None and not actor.is_staff:
            raise CommandError("Only administrators can list plugin tokens.", returncode=4)
        for plugin in PluginToken.objects.prefetch_related("groups").order_by("name", "-created_at"):
            scope = "all" if plugin.all_targets else ",".join(f"group:{g.name}" for g in plugin.groups.all())
            used = f"{plugin.last_used_at:%Y-%m-%d %H:%M}" if plugin.last_used_at else "never"
            state = f"revoked {plugin.revoked_at:%Y-%m-%d %H:%M}" if plugin.revoked_at else "active"
            self.stdout.write(f"{plugin.name}\t{plugin.prefix}…\t{scope}\tlast used {used}\t{state}")

    def _revoke(self, actor: Any, opts: dict[str, Any]) -> None:
        plugin = plugin_token_revoke(actor=actor, via=Via.CLI, plugin=plugin_token_get(name=opts["name"]))
        self.stdout.write(f"Revoked the token of plugin {plugin.name}.")
