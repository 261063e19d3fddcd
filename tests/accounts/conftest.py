"""Real SSH public keys for the accounts tests, made with `cryptography` (as `ssh-keygen` would write them)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def openssh(private_key, comment: str = "") -> str:
    """The .pub line of a key: "type base64 [comment]"."""
    line = private_key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    return f"{line} {comment}" if comment else line


def ed25519_line(comment: str = "alice@laptop") -> str:
    return openssh(ed25519.Ed25519PrivateKey.generate(), comment)


@pytest.fixture
def ed25519_pub() -> Callable[..., str]:
    """A new ED25519 public key line per call."""
    return ed25519_line


@pytest.fixture(scope="session")
def rsa_2048_pub() -> str:
    return openssh(rsa.generate_private_key(public_exponent=65537, key_size=2048), "build@ci")


@pytest.fixture(scope="session")
def rsa_1024_pub() -> str:
    return openssh(rsa.generate_private_key(public_exponent=65537, key_size=1024), "old@box")


@pytest.fixture(scope="session")
def ecdsa_pubs() -> dict[int, str]:
    return {bits: openssh(ec.generate_private_key(curve()), f"ecdsa-{bits}")
            for bits, curve in ((256, ec.SECP256R1), (384, ec.SECP384R1), (521, ec.SECP521R1))}


@pytest.fixture(scope="session")
def dsa_pub() -> str:
    with warnings.catch_warnings():  # cryptography deprecates DSA in SSH: exactly why the portal refuses it
        warnings.simplefilter("ignore")
        return openssh(dsa.generate_private_key(key_size=1024), "ancient@box")
