"""Every rule about SSH keys: who may add and delete them, how many, no duplicates; all audited.

The key itself is checked by accounts.validation (one line, accepted type and size). Each user has
at most `settings.SSH_KEYS_PER_USER` keys; names and keys are unique per user. Users manage their
own keys; administrators may add keys for anyone and delete anyone's.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from portal.actors import Actor, is_admin, require_user
from portal.audit import audit
from portal.exceptions import Conflict, NotFound, PermissionDenied, ValidationFailed

from .models import SSHKey
from .selectors import sshkey_get
from .validation import ParsedKey, clean_key_name, parse_public_key


def _limit() -> int:
    return settings.SSH_KEYS_PER_USER


def _free_name(owner: User, wanted: str) -> str:
    """`wanted`, or "wanted (2)", "wanted (3)", ... when the owner already has a key by that name."""
    taken = set(SSHKey.objects.filter(user=owner).values_list("name", flat=True))
    if wanted not in taken:
        return wanted
    for n in range(2, len(taken) + 2):
        suffix = f" ({n})"
        candidate = wanted[: 60 - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
    return wanted  # unreachable: len(taken) + 1 candidates cannot all be taken


def sshkey_add(*, actor: Actor, via: str, public_key: object, name: object = "", user: User | None = None) -> SSHKey:
    """Add a public key to `user`'s account (the actor's own when None; another user's: administrators).

    A blank name becomes the key's comment, or "<type> key"; such a default name gets " (2)" when
    taken, while a name given that is taken is refused. The same key twice is refused.
    """
    acting = require_user(actor, "Sign in to add SSH keys.")
    owner = user if user is not None else acting
    if owner.pk != acting.pk and not is_admin(acting):
        raise PermissionDenied("Only administrators add keys for other users.")
    parsed: ParsedKey = parse_public_key(public_key)
    explicit = isinstance(name, str) and bool(name.strip())
    key_name = clean_key_name(name, parsed)
    with transaction.atomic():
        # The owner's row lock serialises two adds for one user: the limit cannot be overshot.
        User.objects.select_for_update().filter(pk=owner.pk).first()
        mine = SSHKey.objects.filter(user=owner)
        same = mine.filter(fingerprint=parsed.fingerprint).first()
        if same is not None:
            raise ValidationFailed(f"This key is already on the account, named {same.name!r}.", field="public_key")
        if explicit and mine.filter(name=key_name).exists():
            raise ValidationFailed(f"There is already a key named {key_name!r}: choose another name.", field="name")
        count = mine.count()
        if count >= _limit():
            raise Conflict(f"The account has {count} SSH key{'s' if count != 1 else ''}, the most allowed "
                           f"({_limit()}). "
                           "Delete one you no longer use first.", limit=_limit())
        if not explicit:
            key_name = _free_name(owner, key_name)
        try:
            with transaction.atomic():
                key = SSHKey.objects.create(user=owner, name=key_name, public_key=parsed.line,
                                            key_type=parsed.key_type, bits=parsed.bits,
                                            fingerprint=parsed.fingerprint, created_via=via)
        except IntegrityError:  # a twin request won the race the lock did not cover
            raise ValidationFailed("This key or this name is already on the account.", field="public_key") from None
        whose = "" if owner.pk == acting.pk else f" for {owner.get_username()}"
        audit(actor=acting, via=via, action="sshkey.add", target=key,
              message=f"Added SSH key {key.name}{whose} ({key.label}, {key.fingerprint})",
              data={"owner": owner.get_username(), "fingerprint": key.fingerprint, "type": key.key_type,
                    "bits": key.bits})
    return key


def sshkey_delete(*, actor: Actor, via: str, key: SSHKey | int) -> SSHKey:
    """Remove a key: the owner's own, or anyone's for an administrator (others' keys look missing).
    Returns the removed key (its fields as they were, without an id).

    VMs made before keep the key in their authorized_keys: cloud-init put it there at first boot.
    """
    acting = require_user(actor, "Sign in to manage SSH keys.")
    with transaction.atomic():
        found = sshkey_get(acting, key.pk if isinstance(key, SSHKey) else key)
        locked = SSHKey.objects.select_for_update().filter(pk=found.pk).first()
        if locked is None:  # deleted meanwhile
            raise NotFound(f"SSH key {found.pk} not found.")
        owner = found.user
        whose = "" if owner.pk == acting.pk else f" of {owner.get_username()}"
        audit(actor=acting, via=via, action="sshkey.delete", target=found,
              message=f"Deleted SSH key {found.name}{whose} ({found.label}, {found.fingerprint})",
              data={"owner": owner.get_username(), "fingerprint": found.fingerprint})
        locked.delete()
    return locked
