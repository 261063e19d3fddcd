"""accounts.validation: what a pasted public key may be, and what is refused with which words."""

from __future__ import annotations

import base64
import shutil
import subprocess

import pytest

from accounts.validation import clean_key_name, fingerprint, parse_public_key
from portal.exceptions import ValidationFailed

from .conftest import ed25519_line


def refused(text: object) -> str:
    """The one message for the public_key field (and no other field)."""
    with pytest.raises(ValidationFailed) as exc:
        parse_public_key(text)
    assert list(exc.value.errors) == ["public_key"], exc.value.errors
    [message] = exc.value.errors["public_key"]
    return message


# --- accepted ---------------------------------------------------------------------------------------

def test_an_ed25519_key_is_accepted_and_normalized():
    line = ed25519_line("alice@laptop")
    key = parse_public_key(f"  {line}\r\n")  # pasted with the file's line end and stray spaces
    assert (key.key_type, key.bits, key.comment, key.type_label) == ("ssh-ed25519", 256, "alice@laptop", "ED25519")
    assert key.line == line
    assert key.fingerprint.startswith("SHA256:") and not key.fingerprint.endswith("=")
    assert len(key.fingerprint) == len("SHA256:") + 43


def test_ecdsa_keys_on_the_three_curves_are_accepted(ecdsa_pubs):
    for bits, line in ecdsa_pubs.items():
        key = parse_public_key(line)
        assert (key.key_type, key.bits, key.type_label) == (f"ecdsa-sha2-nistp{bits}", bits, "ECDSA")
        assert key.line == line


def test_an_rsa_key_of_2048_bits_is_accepted(rsa_2048_pub):
    key = parse_public_key(rsa_2048_pub)
    assert (key.key_type, key.bits, key.comment) == ("ssh-rsa", 2048, "build@ci")


def test_a_key_without_comment_and_a_comment_with_spaces_and_accents():
    bare = " ".join(ed25519_line().split()[:2])
    assert parse_public_key(bare).line == bare and parse_public_key(bare).comment == ""
    key = parse_public_key(f"{bare} José's laptop key")
    assert key.comment == "José's laptop key" and key.line == f"{bare} José's laptop key"


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs OpenSSH's ssh-keygen")
def test_the_fingerprint_is_the_one_ssh_keygen_prints(tmp_path, rsa_2048_pub, ecdsa_pubs):
    for line in (ed25519_line(), rsa_2048_pub, ecdsa_pubs[384]):
        path = tmp_path / "key.pub"
        path.write_text(line + "\n")
        out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(path)], capture_output=True, text=True,
                             check=True, timeout=30).stdout
        bits, printed, *_ = out.split()
        key = parse_public_key(line)
        assert (key.fingerprint, str(key.bits)) == (printed, bits)


def test_fingerprint_is_unpadded_base64_of_the_sha256_of_the_blob():
    import hashlib

    blob = base64.b64decode(ed25519_line().split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode()
    assert digest.endswith("=") and fingerprint(blob) == "SHA256:" + digest.rstrip("=")


# --- refused ----------------------------------------------------------------------------------------

def test_authorized_keys_options_in_front_are_refused():
    line = ed25519_line()
    for options in ('command="x"', 'from="10.0.0.0/8"', 'command="/bin/sh -c \'id\'"', "no-pty",
                    'restrict,command="x"', 'environment="A=1"'):
        message = refused(f"{options} {line}")
        assert message.startswith("Paste only the key itself") and 'command="…"' in message, options


def test_a_second_key_after_a_newline_is_refused():
    first, second = ed25519_line("one"), ed25519_line("two")
    for glue in ("\n", "\r\n", "\r", "\u2028"):
        assert refused(first + glue + second).startswith("Paste one key on one line"), repr(glue)


def test_control_characters_anywhere_are_refused():
    line = ed25519_line()
    assert "NUL" in refused(line + " a\x00b")
    for sneaky in ("\x1b[31mred", "tab\there", "bell\x07", "zero\u200bwidth"):
        assert "control or invisible characters" in refused(f"{line} {sneaky}"), repr(sneaky)


def test_malformed_base64_is_refused():
    assert "not valid base64" in refused("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5!!!!")
    assert "not valid base64" in refused("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI")  # not a multiple of 4
    assert "has no data" in refused("ssh-ed25519")


def test_damaged_or_padded_key_data_is_refused():
    data = base64.b64decode(ed25519_line().split()[1])
    truncated = base64.b64encode(data[:-5]).decode()
    assert "damaged or incomplete" in refused(f"ssh-ed25519 {truncated}")
    trailing = base64.b64encode(data + b"\0\0\0\x04evil").decode()  # extra bytes smuggled after the key
    assert "damaged or incomplete" in refused(f"ssh-ed25519 {trailing}")
    assert "not an SSH public key" in refused("ssh-ed25519 AAAA")


def test_an_oversized_paste_is_refused():
    assert "too long (at most 16 KiB)" in refused("ssh-rsa " + "A" * (16 * 1024))


def test_a_short_rsa_key_is_refused(rsa_1024_pub):
    message = refused(rsa_1024_pub)
    assert message.startswith("This RSA key has 1024 bits, too few to be safe") and "ssh-keygen -t ed25519" in message


def test_dsa_keys_are_refused(dsa_pub):
    assert refused(dsa_pub).startswith("DSA keys (ssh-dss) are refused")


def test_the_type_word_must_match_the_key_data(ecdsa_pubs):
    data = ed25519_line().split()[1]
    assert refused(f"ssh-rsa {data}") == (
        "The key says it is 'ssh-rsa' but its data is of type 'ssh-ed25519'. "
        "Paste the line exactly as the .pub file has it.")
    p256 = ecdsa_pubs[256].split()[1]
    assert "but its data is of type 'ecdsa-sha2-nistp256'" in refused(f"ecdsa-sha2-nistp384 {p256}")


def test_unknown_types_certificates_private_keys_and_other_formats_are_refused():
    assert refused("ssh-foo AAAA").startswith("Unsupported key type 'ssh-foo': use ssh-ed25519")
    assert "certificates are not accepted" in refused("ssh-ed25519-cert-v01@openssh.com AAAA")
    assert "private key" in refused("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END "
                                    "OPENSSH PRIVATE KEY-----\n")
    assert "RFC 4716" in refused("---- BEGIN SSH2 PUBLIC KEY ----\nAAAAC3Nz\n---- END SSH2 PUBLIC KEY ----")
    assert refused("").startswith("Paste a public key")
    assert refused("   \n ").startswith("Paste a public key")
    assert refused(None).startswith("Paste the public key as text")
    assert refused(b"ssh-ed25519 AAAA").startswith("Paste the public key as text")


def test_a_long_comment_is_refused():
    assert "comment is too long (101 characters; at most 100)" in refused(ed25519_line("c" * 101))
    parse_public_key(ed25519_line("c" * 100))


# --- names ------------------------------------------------------------------------------------------

def test_a_blank_name_is_the_comment_or_the_type():
    assert clean_key_name("", parse_public_key(ed25519_line("alice@laptop"))) == "alice@laptop"
    assert clean_key_name(None, parse_public_key(" ".join(ed25519_line().split()[:2]))) == "ED25519 key"
    long_comment = parse_public_key(ed25519_line("x" * 80))
    assert clean_key_name("  ", long_comment) == "x" * 59 + "…"
    assert clean_key_name("  work laptop ", long_comment) == "work laptop"


def test_bad_names_are_refused_on_the_name_field():
    key = parse_public_key(ed25519_line())
    for bad, words in (("n" * 61, "too long (61 characters; at most 60)"), ("a\nb", "control or invisible"),
                       (42, "must be text")):
        with pytest.raises(ValidationFailed) as exc:
            clean_key_name(bad, key)
        assert list(exc.value.errors) == ["name"] and words in exc.value.message
