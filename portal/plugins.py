"""External plugins: their tokens, and the objects they may attach jobs to.

A plugin token is made by an administrator (Django admin, `manage.py plugin-token create`), shown once and
stored as its SHA-256 hash (portal.tokens), like console tickets. It authenticates API calls as that
plugin and nothing else: it is never a user, so no user endpoint accepts it. Where a plugin may attach
jobs is its scope: every VM and host (`all_targets`), or the VMs of some groups (no hosts).

The core knows no VMs or hosts: the apps that own job targets register how a plugin finds one of theirs
(`register_plugin_target`: vms for "vm", cluster for "host"), honouring the token's scope.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.db.models import Model
from django.utils import timezone

from .actors import Actor, require_admin
from .audit import audit
from .exceptions import Conflict, InvalidState, NotFound, ValidationFailed
from .models import PluginToken
from .tokens import new_token, token_hash

TOKEN_PREFIX = "vmp_"  # plugin tokens are recognisable (secret scanners, logs)
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# last_used_at is written at most this often per token (not on every progress report)
LAST_USED_RESOLUTION = timedelta(seconds=60)

# target type -> function(plugin, key) giving the target (a model with a name) or raising NotFound
_targets: dict[str, Callable[[PluginToken, str], Model]] = {}


def register_plugin_target(target_type: str, find: Callable[[PluginToken, str], Model]) -> None:
    """Let plugins attach jobs to objects of `target_type`; `find(plugin, key)` honours the plugin's scope."""
    _targets[target_type] = find


def plugin_target_types() -> list[str]:
    return sorted(_targets)


def plugin_target_get(*, plugin: PluginToken, target_type: str, key: str) -> Model:
    """The object a plugin names (by id or name), if its scope reaches it; others are NotFound alike."""
    find = _targets.get(target_type)
    if find is None:
        raise ValidationFailed(f"target_type: one of {', '.join(plugin_target_types())}.", field="target_type")
    return find(plugin, str(key).strip()[:200])


def plugin_group_ids(plugin: PluginToken) -> list[int]:
    """The groups whose VMs a scoped plugin may attach jobs to."""
    return list(plugin.groups.values_list("pk", flat=True))


def _actor_name(plugin: PluginToken) -> str:
    return f"plugin:{plugin.name}"


def plugin_token_check(*, name: str, all_targets: bool, groups: Iterable[Group | str]) -> tuple[str, list[Group]]:
    """The name and groups of a new token, checked (ValidationFailed, NotFound, Conflict: what create refuses)."""
    name = (name or "").strip()
    if not NAME_RE.fullmatch(name):
        raise ValidationFailed("name: 1-63 lower-case letters, digits, '-' or '_', starting with a letter or digit.",
                               field="name")
    group_rows: list[Group] = []
    for group in groups:
        if isinstance(group, Group):
            group_rows.append(group)
            continue
        row = Group.objects.filter(name=group).first()
        if row is None:
            raise NotFound(f"No group named {str(group)[:80]!r}.")
        group_rows.append(row)
    if not all_targets and not group_rows:
        raise ValidationFailed("scope: give all targets, or at least one group whose VMs the plugin may use.",
                               field="scope")
    if PluginToken.objects.filter(name=name, revoked_at__isnull=True).exists():
        raise Conflict(f"Plugin {name!r} already has an active token; revoke it first.")
    return name, group_rows


def plugin_token_create(*, actor: Actor, via: str, name: str, all_targets: bool = False,
                        groups: Iterable[Group | str] = ()) -> tuple[PluginToken, str]:
    """A new plugin token (administrators only): returns the row and the token, which is never shown again."""
    user = require_admin(actor, "Only administrators can issue plugin tokens.")
    name, group_rows = plugin_token_check(name=name, all_targets=all_targets, groups=groups)
    token = TOKEN_PREFIX + new_token()
    try:
        with transaction.atomic():
            plugin = PluginToken.objects.create(name=name, token_hash=token_hash(token), prefix=token[:10],
                                                all_targets=all_targets, created_by=user)
            plugin.groups.set(group_rows)
            audit(actor=actor, via=via, action="plugin_token.create", target_type="plugin_token",
                  target_id=str(plugin.pk), target_name=name,
                  data={"all_targets": all_targets, "groups": [g.name for g in group_rows]})
    except IntegrityError:
        raise Conflict(f"Plugin {name!r} already has an active token; revoke it first.") from None
    return plugin, token


def plugin_token_revoke(*, actor: Actor, via: str, plugin: PluginToken) -> PluginToken:
    """Revoke a token (administrators only): it authenticates nothing from now on; its jobs stay."""
    require_admin(actor, "Only administrators can revoke plugin tokens.")
    with transaction.atomic():
        rows = PluginToken.objects.filter(pk=plugin.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        if not rows:
            raise InvalidState(f"The token of plugin {plugin.name!r} is already revoked.")
        plugin.refresh_from_db()
        audit(actor=actor, via=via, action="plugin_token.revoke", target_type="plugin_token",
              target_id=str(plugin.pk), target_name=plugin.name)
    return plugin


def plugin_token_get(*, name: str) -> PluginToken:
    """The active token of plugin `name` (the CLI's handle)."""
    plugin = PluginToken.objects.filter(name=name, revoked_at__isnull=True).first()
    if plugin is None:
        raise NotFound(f"No active plugin token named {name[:64]!r}.")
    return plugin


def plugin_authenticate(*, token: str) -> PluginToken | None:
    """The active plugin a token belongs to (None: unknown or revoked); records when it was last used."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    plugin = PluginToken.objects.filter(token_hash=token_hash(token), revoked_at__isnull=True).first()
    if plugin is None:
        return None
    now = timezone.now()
    if plugin.last_used_at is None or now - plugin.last_used_at >= LAST_USED_RESOLUTION:
        PluginToken.objects.filter(pk=plugin.pk).update(last_used_at=now)
        plugin.last_used_at = now
    return plugin


def plugin_actor_name(plugin: Any) -> str:
    """How audit rows name a plugin."""
    return _actor_name(plugin)
