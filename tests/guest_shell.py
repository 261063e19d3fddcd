"""The tiny busybox guest's root shell on its serial line, for tests that run commands in a guest.

scripts/build-guest.sh's inittab respawns `-/bin/sh` on ttyS0 as root (no login), so a test can
type a command on the serial console (through the gateway's `open_console`) and read its output.

Two things make that output awkward to read: the line echoes everything typed, and busybox ash
sends a cursor-position query (ESC[6n) with each prompt. So `run` frames the command's output with
markers that only the shell's own output can contain (printf joins them from separate arguments:
the echoed command line never holds them), strips escape sequences and carriage returns, and also
reports the command's exit status.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from types import TracebackType

from portal.hypervisor import get_driver

_ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]")


@dataclass(frozen=True)
class ShellResult:
    status: int
    output: str


class GuestShell:
    """`with GuestShell(uri, uuid) as shell: shell.wait_ready(); shell.run("echo $((6*7))")`."""

    def __init__(self, uri: str, domain_uuid: str) -> None:
        self._console = get_driver(uri).open_console(domain_uuid)
        self.transcript = b""  # everything read so far, for failure messages

    def __enter__(self) -> GuestShell:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._console.close()

    def _read(self, timeout: float) -> bytes:
        data = self._console.read(timeout=timeout)
        if data is None:
            raise AssertionError(f"the guest's console closed; last output: {self.tail()!r}")
        self.transcript += data
        return data

    def tail(self, size: int = 600) -> str:
        return _ESCAPES.sub(b"", self.transcript[-size:]).decode(errors="replace")

    def write(self, text: str) -> None:
        self._console.write(text.encode())

    def read_until(self, pattern: bytes | re.Pattern[bytes], timeout: float) -> re.Match[bytes]:
        """Read until `pattern` (bytes, or a compiled regex) appears in what was read after this call."""
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        start = len(self.transcript)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.transcript, start)
            if match:
                return match
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{regex.pattern!r} not seen on the guest's console within {timeout:.0f} s; "
                                     f"last output: {self.tail()!r}")
            self._read(min(0.3, left))

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until the guest's shell answers. The console may attach mid-boot (and the pty drops what
        nobody reads), so rather than wait for the boot banner, ask the shell every few seconds."""
        deadline = time.monotonic() + timeout
        start = len(self.transcript)
        while time.monotonic() < deadline:
            self.write("\necho shell-$((6*7))-up\n")
            poke_until = min(deadline, time.monotonic() + 3)
            while time.monotonic() < poke_until:
                self._read(0.3)
                if b"shell-42-up" in self.transcript[start:]:
                    return
        raise AssertionError(f"the guest's shell did not answer within {timeout:.0f} s; last output: {self.tail()!r}")

    def run(self, command: str, timeout: float = 30.0) -> ShellResult:
        """Run one shell command line (no trailing `&`) in the guest; its output and exit status."""
        tag = uuid.uuid4().hex[:10]
        self.write(f"printf '@@%s@@\\n' B{tag}; {command}; printf '\\n@@%s:%s@@\\n' E{tag} $?\n")
        match = self.read_until(re.compile(rb"@@B" + tag.encode() + rb"@@\r?\n(.*?)\r?\n@@E" + tag.encode()
                                           + rb":(\d+)@@", re.S), timeout)
        output = _ESCAPES.sub(b"", match.group(1)).replace(b"\r", b"").decode(errors="replace")
        return ShellResult(status=int(match.group(2)), output=output)
