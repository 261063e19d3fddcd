"""SSH public keys in, one checked and normalized key out, or ValidationFailed saying what is wrong.

A key ends up in an authorized_keys file inside the user's VMs (cloud-init), so whatever is stored
must be exactly one line "type base64 [comment]" and nothing else: no authorized_keys options
(`command="..."`, `from="..."`) that would change what the key may do, no second line that would
smuggle in a second key, no control characters. The key data itself is parsed by `cryptography`
(`load_ssh_public_key`) and must be canonical, of an accepted type and strong enough: ED25519,
ECDSA on the NIST curves, RSA of 2048 to 16384 bits. DSA and short RSA keys are refused.

Every door (web form, API, admin) gets the same messages, all for the field `public_key`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_ssh_public_key

from portal.exceptions import ValidationFailed

FIELD = "public_key"
MAX_INPUT_BYTES = 16 * 1024
COMMENT_MAX = 100
NAME_MAX = 60
RSA_MIN_BITS = 2048
RSA_MAX_BITS = 16384

# Accepted key types (the first word of the line) and how `ssh-keygen -l` names them.
KEY_TYPES = {
    "ssh-ed25519": "ED25519",
    "ecdsa-sha2-nistp256": "ECDSA",
    "ecdsa-sha2-nistp384": "ECDSA",
    "ecdsa-sha2-nistp521": "ECDSA",
    "ssh-rsa": "RSA",
}
ACCEPTED = "ssh-ed25519, ecdsa-sha2-nistp256/384/521, or ssh-rsa of 2048 bits or more"
HOW_TO_GET_ONE = "Paste the contents of your .pub file (make a key with `ssh-keygen -t ed25519`)."

_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
# Words that start an authorized_keys line with options instead of a key type.
_OPTION = re.compile(
    r'^(?:[A-Za-z-]+=|"|restrict\b|cert-authority\b|no-(?:agent|port|pty|user-rc|x11|touch)|'
    r'(?:agent|port|pty|user-rc|x11)-forwarding\b|pty\b|verify-required\b)', re.IGNORECASE)


@dataclass(frozen=True)
class ParsedKey:
    """A checked key: its type word, raw data (the blob), comment, size and fingerprint."""

    key_type: str
    blob: bytes
    comment: str
    bits: int

    @property
    def line(self) -> str:
        """The normalized authorized_keys line: "type base64 [comment]"."""
        data = base64.b64encode(self.blob).decode("ascii")
        return f"{self.key_type} {data} {self.comment}" if self.comment else f"{self.key_type} {data}"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.blob)

    @property
    def type_label(self) -> str:
        return KEY_TYPES[self.key_type]


def fingerprint(blob: bytes) -> str:
    """"SHA256:<unpadded base64 of the SHA-256 of the key data>", exactly as `ssh-keygen -l` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def _refuse(message: str) -> ValidationFailed:
    return ValidationFailed(message, field=FIELD)


def _blob_type(blob: bytes) -> str | None:
    """The key type written at the start of the key data (an SSH string), or None if unreadable."""
    if len(blob) < 4:
        return None
    (length,) = struct.unpack(">I", blob[:4])
    if length == 0 or length > 64 or len(blob) < 4 + length:
        return None
    try:
        return blob[4:4 + length].decode("ascii")
    except UnicodeDecodeError:
        return None


def _check_text(text: str) -> str:
    """The pasted text, trimmed, if it can only be one line of printable characters."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_INPUT_BYTES:
        raise _refuse(f"The key is too long (at most {MAX_INPUT_BYTES // 1024} KiB). {HOW_TO_GET_ONE}")
    if "PRIVATE KEY" in text:
        raise _refuse("This is a private key: never share it. Paste the public key instead, "
                      "from the .pub file next to it.")
    if "BEGIN SSH2 PUBLIC KEY" in text:
        raise _refuse("This is a key in the RFC 4716 (SSH2) format: convert it to one line with "
                      "`ssh-keygen -i -f FILE` and paste that.")
    text = text.strip(" \t\r\n")
    if not text:
        raise _refuse("Paste a public key: the contents of your .pub file (make a key with "
                      "`ssh-keygen -t ed25519`).")
    if any(ch in text for ch in "\r\n\v\f\x85\u2028\u2029"):
        raise _refuse("Paste one key on one line: the text has more than one line. Add each key separately.")
    if "\x00" in text:
        raise _refuse("The key contains a NUL character. Paste the key as text.")
    if not text.isprintable():
        raise _refuse("The key contains control or invisible characters (tabs included). "
                      "Paste it again as one line of plain text.")
    return text


def parse_public_key(value: object) -> ParsedKey:
    """Parse and check one public key line; ValidationFailed(field="public_key") says what is wrong."""
    if not isinstance(value, str):
        raise _refuse(f"Paste the public key as text. {HOW_TO_GET_ONE}")
    text = _check_text(value)
    words = text.split(" ", 2)
    key_type = words[0]
    if key_type not in KEY_TYPES:
        _explain_unknown_type(key_type, text)
    if len(words) < 2 or not words[1]:
        raise _refuse(f"The key has no data after {key_type!r}. Copy the whole line of the .pub file.")
    data = words[1]
    comment = words[2].strip(" ") if len(words) > 2 else ""
    if not _BASE64.fullmatch(data) or len(data) % 4:
        raise _refuse("The key's data is not valid base64. Copy the whole line of the .pub file, "
                      "without line breaks or missing characters.")
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _refuse("The key's data is not valid base64. Copy the whole line of the .pub file.") from None
    inner = _blob_type(blob)
    if inner is None:
        raise _refuse("The key's data is not an SSH public key. Copy the whole line of the .pub file.")
    if inner != key_type:
        raise _refuse(f"The key says it is {key_type!r} but its data is of type {inner!r}. "
                      "Paste the line exactly as the .pub file has it.")
    bits = _load(key_type, data, blob)
    if len(comment) > COMMENT_MAX:
        raise _refuse(f"The key's comment is too long ({len(comment)} characters; at most {COMMENT_MAX}).")
    return ParsedKey(key_type=key_type, blob=blob, comment=comment, bits=bits)


def _explain_unknown_type(key_type: str, text: str) -> None:
    """Refuse a line that does not start with an accepted key type, saying why as precisely as we can."""
    if key_type == "ssh-dss":
        raise _refuse("DSA keys (ssh-dss) are refused: they are weak and OpenSSH no longer accepts them. "
                      "Make an ED25519 key with `ssh-keygen -t ed25519`.")
    if _OPTION.match(key_type) or any(f" {t} " in f" {text} " for t in KEY_TYPES):
        raise _refuse('Paste only the key itself ("ssh-ed25519 AAAA… comment"), without authorized_keys '
                      'options such as command="…", from="…" or no-pty in front of it.')
    if "-cert-v01@openssh.com" in key_type:
        raise _refuse(f"SSH certificates are not accepted: paste the plain public key ({ACCEPTED}).")
    shown = key_type if len(key_type) <= 40 else key_type[:39] + "…"
    raise _refuse(f"Unsupported key type {shown!r}: use {ACCEPTED}.")


def _load(key_type: str, data: str, blob: bytes) -> int:
    """Parse the key data with `cryptography`; its size in bits once it is known to be acceptable."""
    try:
        key = load_ssh_public_key(f"{key_type} {data}".encode("ascii"))
    except (ValueError, UnsupportedAlgorithm):
        raise _refuse("The key's data is damaged or incomplete. Copy the whole line of the .pub file.") from None
    # Only the canonical encoding is kept, so the stored line, the fingerprint and the key agree.
    canonical = key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).split(b" ")[1]
    if base64.b64decode(canonical) != blob:
        raise _refuse("The key's data is not in the standard encoding. Copy the line from the .pub file.")
    if isinstance(key, ed25519.Ed25519PublicKey):
        return 256
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.curve.key_size
    if isinstance(key, rsa.RSAPublicKey):
        bits = key.key_size
        if bits < RSA_MIN_BITS:
            raise _refuse(f"This RSA key has {bits} bits, too few to be safe: RSA keys need at least "
                          f"{RSA_MIN_BITS}. Make an ED25519 key with `ssh-keygen -t ed25519`.")
        if bits > RSA_MAX_BITS:
            raise _refuse(f"This RSA key has {bits} bits: at most {RSA_MAX_BITS} are accepted.")
        return bits
    raise _refuse(f"Unsupported key type: use {ACCEPTED}.")  # pragma: no cover - types are checked above


def clean_key_name(name: object, key: ParsedKey) -> str:
    """The key's name: as given (trimmed), or the key's comment, or "<type> key" when left blank."""
    if name is None:
        name = ""
    if not isinstance(name, str):
        raise ValidationFailed("The name must be text.", field="name")
    name = name.strip()
    if not name:
        default = key.comment or f"{key.type_label} key"
        return default if len(default) <= NAME_MAX else default[:NAME_MAX - 1] + "…"
    if len(name) > NAME_MAX:
        raise ValidationFailed(f"The name is too long ({len(name)} characters; at most {NAME_MAX}).", field="name")
    if not name.isprintable():
        raise ValidationFailed("The name contains control or invisible characters.", field="name")
    return name

