"""One-time tokens (console tickets, share and console links, Slack link tokens): made and hashed once.

Only a token's hash is stored; the token itself goes to its holder and never into a row or a log.
"""

from __future__ import annotations

import hashlib
import secrets


def token_hash(token: str) -> str:
    """The stored form of a token (SHA-256, hex); a token that is not valid text still hashes."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def new_token(nbytes: int = 32) -> str:
    """A fresh URL-safe token with `nbytes` of randomness."""
    return secrets.token_urlsafe(nbytes)
