"""Extra grants on VMs that higher apps register (vms does not import them).

- `register_visibility_grant(fn)`: `fn(user) -> Q` on VM rows; `vm_visible` ORs each grant with the
  owner/group rule, so a user sees (and may start, stop, open the console of) the VMs a grant names.
  The pools app registers one: the taker of a pool VM uses it like their own while it is taken.
- `register_action_guard(fn)`: `fn(actor, vm, verb) -> str | None`; a non-empty answer refuses the
  verb (PermissionDenied with that sentence). vms asks before `delete`, `snapshot`, `update` (rename or
  re-describe), `grow_disk` and `lease` (extend) (the pools app: a taker may do none of these to a pool VM;
  a stateless reset discards the disk, and the next taker gets the VM as the pool made it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from django.db.models import Q

from portal.actors import Actor
from portal.exceptions import PermissionDenied

if TYPE_CHECKING:  # annotations only: vms.models imports nothing from here
    from django.contrib.auth.models import User

    from .models import VM

VisibilityGrant = Callable[["User"], Q]
ActionGuard = Callable[[Actor, "VM", str], "str | None"]

_grants: dict[str, VisibilityGrant] = {}
_guards: dict[str, ActionGuard] = {}


def register_visibility_grant(name: str, grant: VisibilityGrant) -> None:
    """Let `grant(user)` (a Q on VM) add VMs to what a non-admin user sees; a name registered again replaces it."""
    _grants[name] = grant


def register_action_guard(name: str, guard: ActionGuard) -> None:
    """Let `guard(actor, vm, verb)` refuse a verb on a VM with a sentence (None: no objection)."""
    _guards[name] = guard


def granted(user: User) -> Q | None:
    """The OR of every registered grant for `user` (None when no app registered one)."""
    combined: Q | None = None
    for grant in _grants.values():
        q = grant(user)
        combined = q if combined is None else combined | q
    return combined


def check_action(*, actor: Actor, vm: VM, verb: str) -> None:
    """Raise PermissionDenied when a registered guard refuses `verb` on `vm` for `actor`."""
    for guard in _guards.values():
        refusal = guard(actor, vm, verb)
        if refusal:
            raise PermissionDenied(refusal)
