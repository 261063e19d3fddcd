"""Reads of SSH keys: a user's own keys (administrators may look up anyone's by id), and the
authorized_keys lines cloud-init puts into a user's VMs."""

from __future__ import annotations

from django.db.models import QuerySet

from portal.actors import Actor, is_admin, is_signed_in
from portal.exceptions import NotFound

from .models import SSHKey


def sshkey_list(user: Actor) -> QuerySet[SSHKey]:
    """The user's own keys, oldest first (nobody's for an anonymous visitor)."""
    if not is_signed_in(user):
        return SSHKey.objects.none()
    return SSHKey.objects.filter(user=user).order_by("created_at", "id")


def sshkey_get(user: Actor, pk: object) -> SSHKey:
    """One key by id: the user's own, or anyone's for an administrator; others' keys look missing."""
    try:
        key_id = int(str(pk))
    except ValueError:
        raise NotFound(f"SSH key {str(pk)[:40]!r} not found.") from None
    if not is_signed_in(user):
        raise NotFound(f"SSH key {key_id} not found.")
    keys = SSHKey.objects.select_related("user")
    if not is_admin(user):
        keys = keys.filter(user=user)
    found = keys.filter(pk=key_id).first()
    if found is None:
        raise NotFound(f"SSH key {key_id} not found.")
    return found


def authorized_keys(user: Actor) -> list[str]:
    """The user's keys as authorized_keys lines ("type base64 [comment]"), oldest first: for cloud-init."""
    return list(sshkey_list(user).values_list("public_key", flat=True))
