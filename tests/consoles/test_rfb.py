"""The relay's RFB layer on its own: handshakes on both sides and the framing of browser messages."""

from __future__ import annotations

import struct

import pytest

from consoles.exceptions import BadFrame, close_for
from consoles.rfb import ClientStream, HandshakeFailed, ServerHandshake, vnc_auth_response


def _client_ready(view_only: bool = False) -> ClientStream:
    stream = ClientStream(view_only=view_only)
    assert stream.feed(b"RFB 003.008\n") == (b"", b"\x01\x01")
    assert stream.feed(b"\x01") == (b"", b"\0\0\0\0")
    assert stream.feed(b"\x00") == (b"\x01", b""), "ClientInit is always sent as shared"
    return stream


KEY = struct.pack(">BBHI", 4, 1, 0, 0x61)
POINTER = struct.pack(">BBHH", 5, 1, 10, 10)
UPDATE = struct.pack(">BBHHHH", 3, 0, 0, 0, 720, 400)
ENCODINGS = struct.pack(">BBHii", 2, 0, 2, 0, -223)
CUT = struct.pack(">BxxxI", 6, 5) + b"hello"
QEMU_KEY = struct.pack(">BBHII", 255, 0, 1, 0x61, 0x1e)


def test_browser_handshake_offers_only_no_authentication_for_each_version():
    assert ClientStream(view_only=False).feed(b"RFB 003.003\n") == (b"", b"\0\0\0\x01")
    stream = ClientStream(view_only=False)
    assert stream.feed(b"RFB 003.007\n") == (b"", b"\x01\x01")
    assert stream.feed(b"\x01") == (b"", b""), "3.7 has no SecurityResult for None"


def test_messages_are_framed_across_arbitrary_chunks():
    stream = _client_ready()
    data = ENCODINGS + UPDATE + KEY + CUT + POINTER + QEMU_KEY
    forwarded = b""
    for i in range(0, len(data), 3):
        forwarded += stream.feed(data[i:i + 3])[0]
    assert forwarded == data


def test_view_only_drops_keyboard_pointer_and_clipboard_but_not_update_requests():
    stream = _client_ready(view_only=True)
    to_server, _ = stream.feed(KEY + UPDATE + POINTER + CUT + QEMU_KEY + ENCODINGS)
    assert to_server == UPDATE + ENCODINGS
    assert stream.dropped == 4


@pytest.mark.parametrize(("data", "message"), [
    (b"\x63junk", "Bad frame: unknown RFB client message type 99."),
    (struct.pack(">BxxxI", 6, 5_000_000), "Bad frame: clipboard text larger than 1 MiB."),
    (b"\xff\x07", "Bad frame: unknown QEMU client message 7."),
])
def test_garbage_after_the_handshake_is_a_bad_frame(data, message):
    stream = _client_ready()
    with pytest.raises(BadFrame) as err:
        stream.feed(data)
    assert err.value.message == message
    assert close_for(err.value) == (4400, message)


def test_garbage_instead_of_a_version_or_security_choice():
    with pytest.raises(BadFrame, match="not an RFB 3.3/3.7/3.8 client version"):
        ClientStream(view_only=False).feed(b"GET / HTTP/1.1\r\n")
    stream = ClientStream(view_only=False)
    stream.feed(b"RFB 003.008\n")
    with pytest.raises(BadFrame, match="security type 2 was not offered"):
        stream.feed(b"\x02")


def test_server_handshake_answers_the_vnc_password_challenge():
    hs = ServerHandshake("s3cret")
    assert hs.feed(b"RFB 003.008\n") == b"RFB 003.008\n"
    assert hs.feed(b"\x02\x01\x02") == b"\x02", "VNC authentication chosen when a password is set"
    challenge = bytes(range(16))
    assert hs.feed(challenge) == vnc_auth_response("s3cret", challenge)
    assert not hs.done
    hs.feed(b"\0\0\0\0")
    assert hs.done


def test_vnc_auth_response_is_des_with_bit_reversed_key():
    # Reference value computed with the VNC key convention (each key byte bit-reversed, DES-ECB).
    assert vnc_auth_response("", b"\0" * 16) == vnc_auth_response("\0" * 8, b"\0" * 16)
    assert len(vnc_auth_response("password", bytes(16))) == 16
    assert vnc_auth_response("password", bytes(16)) != vnc_auth_response("passwore", bytes(16))
    assert vnc_auth_response("12345678x", bytes(16)) == vnc_auth_response("12345678", bytes(16)), \
        "VNC passwords are cut at 8 characters"


def test_server_handshake_without_password_and_failures():
    hs = ServerHandshake(None)
    hs.feed(b"RFB 003.008\n")
    assert hs.feed(b"\x01\x01") == b"\x01"
    hs.feed(b"\0\0\0\0")
    assert hs.done

    hs = ServerHandshake("pw")
    hs.feed(b"RFB 003.008\n")
    hs.feed(b"\x01\x02")
    hs.feed(bytes(16))
    reason = b"Authentication failed"
    with pytest.raises(HandshakeFailed, match="refused the connection: Authentication failed"):
        hs.feed(b"\0\0\0\x01" + struct.pack(">I", len(reason)) + reason)
    assert close_for(HandshakeFailed("x"))[0] == 4502

    hs = ServerHandshake(None)
    hs.feed(b"RFB 003.008\n")
    with pytest.raises(HandshakeFailed, match="wants a password"):
        hs.feed(b"\x01\x02")
    with pytest.raises(HandshakeFailed, match="did not speak RFB"):
        ServerHandshake(None).feed(b"SSH-2.0-OpenSSH\n")


def test_close_reasons_fit_in_a_control_frame():
    code, reason = close_for(BadFrame("é" * 200))
    assert code == 4400 and len(reason.encode()) <= 123
