"""Who acts: the `Actor` type every service takes, and the one check that an actor may act at all.

The portal uses Django's own user model (AUTH_USER_MODEL is not swapped), so `User` is it.
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User
from typing_extensions import TypeIs  # (a dependency of Django's task backend and psycopg, among others)

from .exceptions import PermissionDenied, is_staff

# A signed-in user, an anonymous visitor (refused), or None for the system itself (monitor, reaper).
type Actor = User | AnonymousUser | None


def require_user(actor: Actor, message: str = "Sign in first.") -> User:
    """The actor as an active, signed-in user, or PermissionDenied with `message`."""
    if actor is None or not actor.is_authenticated or not actor.is_active or not isinstance(actor, User):
        raise PermissionDenied(message)
    return actor


def is_signed_in(actor: Actor) -> TypeIs[User]:
    """An active, signed-in user (what every door's visibility starts from)."""
    return bool(actor is not None and actor.is_authenticated and actor.is_active)


def is_admin(actor: Actor) -> bool:
    """Staff (administrators) see and may do everything."""
    return is_staff(actor)


def require_admin(actor: Actor, message: str = "Only administrators can do this.") -> User | None:
    """An administrator, or None for the system itself (set-up, monitor); anyone else: PermissionDenied."""
    if actor is None:
        return None
    user = require_user(actor, message)
    if not user.is_staff:
        raise PermissionDenied(message)
    return user
