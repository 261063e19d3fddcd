"""Secrets of cloud connections (a Keystone password, an application credential's secret): kept
encrypted at rest, or referenced from the environment, never shown again once saved.

The key: PORTAL_SECRETS_KEY (a Fernet key: `python3 -c "from cryptography.fernet import Fernet;
print(Fernet.generate_key().decode())"`) when set, else one derived from SECRET_KEY (HKDF-SHA256), so a
portal without the extra setting still never stores a secret in clear. Rotating SECRET_KEY without
PORTAL_SECRETS_KEY makes stored secrets unreadable: the connection check then says to enter it again.
"""

from __future__ import annotations

import base64
import os

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

from portal.exceptions import ValidationFailed

PREFIX = "fernet:"


def _fernet() -> Fernet:
    key = (getattr(settings, "SECRETS_KEY", "") or "").strip()
    if key:
        return Fernet(key.encode())
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"vmportal-clouds",
                   info=b"cloud connection secrets").derive(settings.SECRET_KEY.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt(secret: str) -> str:
    """The stored form of a secret ("" stays "")."""
    if not secret:
        return ""
    return PREFIX + _fernet().encrypt(secret.encode()).decode()


def decrypt(stored: str) -> str:
    if not stored:
        return ""
    if not stored.startswith(PREFIX):
        raise ValidationFailed("The stored secret is not in a known form; enter it again.", field="secret")
    try:
        return _fernet().decrypt(stored[len(PREFIX):].encode()).decode()
    except InvalidToken:
        raise ValidationFailed("The stored secret cannot be decrypted with this portal's key (was SECRET_KEY or "
                               "PORTAL_SECRETS_KEY changed?); enter it again.", field="secret") from None


def from_environment(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise ValidationFailed(f"The environment variable {name} that should hold the secret is not set in the "
                               "portal's processes.", field="secret_env")
    return value
