"""Who acts: the `Actor` type every service takes, and the one check that an actor may act at all."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser, AnonymousUser

from .exceptions import PermissionDenied

# A signed-in user, an anonymous visitor (refused), or None for the system itself (monitor, reaper).
type Actor = AbstractUser | AnonymousUser | None


def require_user(actor: Actor, message: str = "Sign in first.") -> AbstractUser:
    """The actor as an active, signed-in user, or PermissionDenied with `message`."""
    if actor is None or not actor.is_authenticated or not actor.is_active or not isinstance(actor, AbstractUser):
        raise PermissionDenied(message)
    return actor


def is_admin(actor: Actor) -> bool:
    """Staff (administrators) see and may do everything."""
    return bool(actor is not None and actor.is_authenticated and actor.is_active and actor.is_staff)
