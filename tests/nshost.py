"""Namespace hosts for tests: a libvirtd of the test session's own inside a network namespace.

Guests with networks (bridges, dnsmasq, firewall rules) must never be set up in this machine's own
network namespace, so tests that need them run their guests on a namespace host started by
`scripts/nshost.sh` (see docs/testing.md): a second libvirtd in network namespace NAME, with its own
hostname, host UUID, /etc/libvirt, /run, /var/lib/libvirt and log files under its state directory,
reached from here through a unix socket. Everything on it belongs to the test session: the fixtures
(tests/conftest.py `ns_hypervisor`, `ns_host`) clear it at the start and the end of the session.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NSHOST = ROOT / "scripts" / "nshost.sh"
NSHOST_DIR = Path(os.environ.get("PORTAL_NSHOST_DIR", "/var/lib/vmportal/nshosts"))


def nshost(*args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `scripts/nshost.sh ARGS`; with `check`, a failure raises with the script's own words."""
    proc = subprocess.run([str(NSHOST), *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"nshost.sh {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


@dataclass(frozen=True)
class NsHypervisor:
    """A running namespace host: its name (also its netns and hostname), client URI and state dir."""

    name: str
    uri: str
    state_dir: Path
    addr: str = ""  # its address on the fabric (started with --addr), without the prefix length

    @property
    def tcp_uri(self) -> str:
        """How another namespace host's libvirtd reaches this one (peer-to-peer migration)."""
        return f"qemu+tcp://{self.addr}/system" if self.addr else ""

    @property
    def pool_dir(self) -> Path:
        """Where this host's storage pool lives: in its state dir, never shared with another daemon."""
        return self.state_dir / "images"

    def exec(self, argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the host's network namespace (`ip netns exec NAME ...`): what its guests'
        networks look like from the host side (bridges, addresses, ping a guest)."""
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True,
                              timeout=timeout)

    def virsh(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """virsh against this host, from the root namespace through its socket."""
        return subprocess.run(["virsh", "-q", "-c", self.uri, *args], capture_output=True, text=True,
                              timeout=timeout)

    def pids(self) -> list[int]:
        """Every process in the host's network namespace (libvirtd, virtlogd, QEMU, dnsmasq, tini)."""
        out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True, timeout=10)
        return [int(p) for p in out.stdout.split()]

    def _names(self, *args: str) -> list[str]:
        proc = self.virsh(*args)
        return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]

    def clear(self) -> None:
        """Destroy and undefine every domain, network and storage pool (with its volumes) on the host.

        Through virsh, whatever made them: leftovers of an interrupted run may not be the portal's.
        """
        for dom in self._names("list", "--all", "--name"):
            self.virsh("destroy", dom)
            self.virsh("undefine", dom, "--managed-save", "--snapshots-metadata", "--nvram")
        for net in self._names("net-list", "--all", "--name"):
            self.virsh("net-destroy", net)
            self.virsh("net-undefine", net)
        for pool in self._names("pool-list", "--all", "--name"):
            self.virsh("pool-start", pool)  # volumes of an inactive pool cannot be listed
            self.virsh("pool-refresh", pool)
            for vol in self._names("vol-list", "--pool", pool):
                self.virsh("vol-delete", "--pool", pool, vol)
            self.virsh("pool-destroy", pool)
            self.virsh("pool-undefine", pool)


def ns_up(name: str, *, addr: str | None = None) -> NsHypervisor:
    """Start namespace host `name` (or find it running) and return it."""
    args = ["up", name] + (["--addr", addr] if addr else [])
    uri = nshost(*args).stdout.strip().splitlines()[-1]
    return NsHypervisor(name=name, uri=uri, state_dir=NSHOST_DIR / name, addr=addr.split("/")[0] if addr else "")


def ns_down(name: str, *, purge: bool = False) -> None:
    """Stop namespace host `name`: its processes, netns and mounts are gone when this returns."""
    nshost("down", name, *(["--purge"] if purge else []))
