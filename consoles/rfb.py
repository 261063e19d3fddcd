"""Just enough RFB (VNC) for a relay that terminates authentication: sans-IO, shared by both tiers.

The relay talks to QEMU's VNC server itself (version, security type, VNC password challenge) and
offers the browser "no authentication", so the per-domain VNC password never leaves the server.
After the handshake it frames the browser's messages: that lets it drop keyboard and mouse input
for view-only sessions, force the shared flag (a viewer never disconnects the owner), and refuse
garbage with a clear reason instead of passing it on to QEMU.
"""

from __future__ import annotations

import struct

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from .exceptions import BadFrame, ConsoleRefused

VERSION_38 = b"RFB 003.008\n"
_CLIENT_VERSIONS = {b"RFB 003.003\n": 3, b"RFB 003.007\n": 7, b"RFB 003.008\n": 8}

SEC_NONE = 1
SEC_VNC_AUTH = 2

# Client-to-server message types noVNC sends; value = fixed length, or a callable for variable ones.
MSG_SET_PIXEL_FORMAT = 0
MSG_SET_ENCODINGS = 2
MSG_FB_UPDATE_REQUEST = 3
MSG_KEY_EVENT = 4
MSG_POINTER_EVENT = 5
MSG_CLIENT_CUT_TEXT = 6
MSG_ENABLE_CONTINUOUS_UPDATES = 150
MSG_CLIENT_FENCE = 248
MSG_XVP = 250
MSG_SET_DESKTOP_SIZE = 251
MSG_QEMU = 255

# What a view-only viewer may not send: keys, pointer, clipboard, resizing, power (XVP).
INPUT_MESSAGES = frozenset({MSG_KEY_EVENT, MSG_POINTER_EVENT, MSG_CLIENT_CUT_TEXT, MSG_XVP,
                            MSG_SET_DESKTOP_SIZE})
MAX_CUT_TEXT = 1 << 20


class HandshakeFailed(ConsoleRefused):
    """The VNC server refused us or spoke something we do not understand."""

    code = "vnc_handshake_failed"
    http_status = 502


def vnc_auth_response(password: str, challenge: bytes) -> bytes:
    """VNC authentication: DES-encrypt the 16-byte challenge with the bit-reversed password as key."""
    key = password.encode("latin-1")[:8].ljust(8, b"\0")
    key = bytes(int(f"{b:08b}"[::-1], 2) for b in key)
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()  # K1=K2=K3: single DES
    return encryptor.update(challenge) + encryptor.finalize()


def _u32(value: int) -> bytes:
    return struct.pack(">I", value)


class ServerHandshake:
    """The relay's side of the handshake with the VNC server, up to SecurityResult.

    Feed it what the server sends; it returns what to send back. `done` turns true once the server
    accepted us; the next thing to send is the ClientInit the browser supplies.
    """

    def __init__(self, password: str | None) -> None:
        self.password = password
        self.state = "version"
        self.minor = 8
        self.buf = bytearray()
        self.done = False

    def _take(self, n: int) -> bytes | None:
        if len(self.buf) < n:
            return None
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def _failure_reason(self) -> str | None:
        """A length-prefixed reason string, once complete."""
        if len(self.buf) < 4:
            return None
        (length,) = struct.unpack(">I", self.buf[:4])
        if len(self.buf) < 4 + length:
            return None
        reason = bytes(self.buf[4:4 + length]).decode("utf-8", "replace")
        del self.buf[:4 + length]
        return reason

    def feed(self, data: bytes) -> bytes:
        self.buf += data
        out = b""
        while not self.done:
            if self.state == "version":
                version = self._take(12)
                if version is None:
                    break
                if not version.startswith(b"RFB 003."):
                    raise HandshakeFailed("The VNC server did not speak RFB.")
                try:
                    minor = int(version[8:11])
                except ValueError:
                    raise HandshakeFailed("The VNC server sent a malformed version.") from None
                self.minor = 8 if minor >= 8 else (7 if minor == 7 else 3)
                out += b"RFB 003.%03d\n" % self.minor
                self.state = "sectypes" if self.minor >= 7 else "sectype33"
            elif self.state == "sectype33":
                raw = self._take(4)
                if raw is None:
                    break
                (sectype,) = struct.unpack(">I", raw)
                if sectype == 0:
                    self.state = "failed"
                    continue
                out += self._choose([sectype], reply=False)
            elif self.state == "sectypes":
                if not self.buf:
                    break
                count = self.buf[0]
                if count == 0:
                    del self.buf[:1]
                    self.state = "failed"
                    continue
                if len(self.buf) < 1 + count:
                    break
                types = list(self.buf[1:1 + count])
                del self.buf[:1 + count]
                out += self._choose(types, reply=True)
            elif self.state == "challenge":
                challenge = self._take(16)
                if challenge is None:
                    break
                out += vnc_auth_response(self.password or "", challenge)
                self.state = "result"
            elif self.state == "result":
                raw = self._take(4)
                if raw is None:
                    break
                if struct.unpack(">I", raw)[0] == 0:
                    self.done = True
                elif self.minor >= 8:
                    self.state = "failed"
                else:
                    raise HandshakeFailed("The VNC server rejected the console password.")
            elif self.state == "failed":
                reason = self._failure_reason()
                if reason is None:
                    break
                raise HandshakeFailed(f"The VNC server refused the connection: {reason[:80]}")
        return out

    def _choose(self, types: list[int], *, reply: bool) -> bytes:
        if self.password and SEC_VNC_AUTH in types:
            self.state = "challenge"
            return bytes([SEC_VNC_AUTH]) if reply else b""
        if SEC_NONE in types:
            if self.minor >= 8:
                self.state = "result"
            else:
                self.done = True
            return bytes([SEC_NONE]) if reply else b""
        if SEC_VNC_AUTH in types:
            raise HandshakeFailed("The VNC server wants a password, but none is set for this VM.")
        raise HandshakeFailed(f"The VNC server offers no security type we support ({types}).")

    @property
    def leftover(self) -> bytes:
        data = bytes(self.buf)
        self.buf.clear()
        return data


class ClientStream:
    """The browser's side: we play a VNC server that needs no password, then frame its messages.

    `greeting()` is the first thing to send the browser; `feed(data)` returns
    (bytes for the VNC server, bytes for the browser) and raises BadFrame on anything malformed.
    """

    def __init__(self, *, view_only: bool) -> None:
        self.view_only = view_only
        self.state = "version"
        self.minor = 8
        self.buf = bytearray()
        self.dropped = 0  # input messages dropped (view-only)

    @staticmethod
    def greeting() -> bytes:
        return VERSION_38

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        if self.state == "messages":  # the hot path: no handshake left, frame without copying
            return self._frame(data), b""
        self.buf += data
        to_server = bytearray()
        to_client = bytearray()
        while self.state != "messages":
            if self.state == "version":
                if len(self.buf) < 12:
                    break
                version = bytes(self.buf[:12])
                del self.buf[:12]
                minor = _CLIENT_VERSIONS.get(version)
                if minor is None:
                    raise BadFrame("Bad frame: not an RFB 3.3/3.7/3.8 client version.")
                self.minor = minor
                if minor == 3:
                    to_client += _u32(SEC_NONE)
                    self.state = "init"
                else:
                    to_client += bytes([1, SEC_NONE])
                    self.state = "security"
            elif self.state == "security":
                if not self.buf:
                    break
                choice = self.buf[0]
                del self.buf[:1]
                if choice != SEC_NONE:
                    raise BadFrame(f"Bad frame: security type {choice} was not offered.")
                if self.minor >= 8:
                    to_client += _u32(0)
                self.state = "init"
            elif self.state == "init":
                if not self.buf:
                    break
                del self.buf[:1]
                to_server += b"\x01"  # ClientInit: always shared, never kick the other viewers
                self.state = "messages"
        if self.state == "messages" and self.buf:
            rest = bytes(self.buf)
            self.buf.clear()
            to_server += self._frame(rest)
        return bytes(to_server), bytes(to_client)

    def _frame(self, data: bytes) -> bytes:
        """Complete messages of `data` (after what is pending) to pass on; keeps an incomplete tail."""
        if self.buf:
            data = bytes(self.buf) + data
            self.buf.clear()
        view = memoryview(data)
        size = len(data)
        offset = start = 0
        parts: list[memoryview] = []
        while offset < size:
            length = self._message_length(view, offset, size)
            if length is None or offset + length > size:
                break
            if self.view_only and self._is_input(view, offset):
                if start < offset:
                    parts.append(view[start:offset])
                start = offset + length
                self.dropped += 1
            offset += length
        if start < offset:
            parts.append(view[start:offset])
        if offset < size:
            self.buf += view[offset:]
        if len(parts) == 1 and len(parts[0]) == size:
            return data  # the usual case: everything passes, no copy
        return b"".join(parts)

    @staticmethod
    def _is_input(buf, offset: int) -> bool:
        kind = buf[offset]
        if kind in INPUT_MESSAGES:
            return True
        return kind == MSG_QEMU and buf[offset + 1] == 0  # QEMU extended key event

    _FIXED = {MSG_SET_PIXEL_FORMAT: 20, MSG_FB_UPDATE_REQUEST: 10, MSG_KEY_EVENT: 8, MSG_POINTER_EVENT: 6,
              MSG_ENABLE_CONTINUOUS_UPDATES: 10, MSG_XVP: 4}

    def _message_length(self, buf, off: int, size: int) -> int | None:
        """Length of the client message at `off`, None when more bytes are needed to know it."""
        avail = size - off
        kind = buf[off]
        fixed = self._FIXED.get(kind)
        if fixed is not None:
            return fixed
        if kind == MSG_SET_ENCODINGS:
            if avail < 4:
                return None
            return 4 + 4 * struct.unpack_from(">H", buf, off + 2)[0]
        if kind == MSG_CLIENT_CUT_TEXT:
            if avail < 8:
                return None
            (length,) = struct.unpack_from(">i", buf, off + 4)  # negative: extended clipboard
            if abs(length) > MAX_CUT_TEXT:
                raise BadFrame("Bad frame: clipboard text larger than 1 MiB.")
            return 8 + abs(length)
        if kind == MSG_CLIENT_FENCE:
            if avail < 9:
                return None
            if buf[off + 8] > 64:
                raise BadFrame("Bad frame: fence payload longer than 64 bytes.")
            return 9 + buf[off + 8]
        if kind == MSG_SET_DESKTOP_SIZE:
            if avail < 8:
                return None
            return 8 + 16 * buf[off + 6]
        if kind == MSG_QEMU:
            if avail < 2:
                return None
            sub = buf[off + 1]
            if sub == 0:  # extended key event
                return 12
            if sub == 1:  # audio: enable/disable (4 bytes) or set format (10 bytes)
                if avail < 4:
                    return None
                return 10 if struct.unpack_from(">H", buf, off + 2)[0] == 2 else 4
            raise BadFrame(f"Bad frame: unknown QEMU client message {sub}.")
        raise BadFrame(f"Bad frame: unknown RFB client message type {kind}.")
