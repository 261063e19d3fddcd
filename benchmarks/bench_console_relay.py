"""VNC through the console relays: Channels (daphne) vs websockify (`console_proxy`) vs direct TCP.

One run on qemu:///system with one firmware-only VM (SeaBIOS text screen). Each path is measured
the same way, rounds interleaved so drift hits them alike:

- connect: a fresh connection up to ServerInit (for the relays: ticket redemption, libvirt's live
  XML, the relay's own VNC password handshake, then the browser-side handshake);
- round trip: ClientInit -> ServerInit (QEMU answers at once): each relay's added latency;
- up: browser -> VNC server throughput (clipboard messages, framed by the relays);
- down: full-screen raw FramebufferUpdates back to back (paced by QEMU's display refresh tick).

    .venv/bin/python benchmarks/bench_console_relay.py [--rounds 5]

Writes the `consoles` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TMP = tempfile.mkdtemp(prefix="vmportal-bench-console-")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PORTAL_PORT, PROXY_PORT = _free_port(), _free_port()
ORIGIN = f"http://127.0.0.1:{PORTAL_PORT}"
os.environ.update({
    "DJANGO_SETTINGS_MODULE": "portal.settings.base",
    "PORTAL_DATA_DIR": TMP,
    "PORTAL_TASKS_BACKEND": "django.tasks.backends.immediate.ImmediateBackend",
    "PORTAL_INSTANCE_ID": f"bench-{uuid.uuid4().hex[:6]}",
    "PORTAL_DOMAIN_PREFIX": "vmpbench",
    "PORTAL_LOG_LEVEL": "WARNING",
    "PORTAL_CONSOLE_ALLOWED_ORIGINS": ORIGIN,
    "PORTAL_CONSOLE_POLL_SECONDS": "5",
})
os.environ.pop("PORTAL_DATABASE_URL", None)

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.sessions.backends.db import SessionStore  # noqa: E402
from django.core.management import call_command  # noqa: E402
from websockets.asyncio.client import connect as ws_connect  # noqa: E402

from benchmarks.report import write_section  # noqa: E402
from cluster.services import host_register  # noqa: E402
from consoles.rfb import ServerHandshake  # noqa: E402
from consoles.services import console_ticket_issue  # noqa: E402
from portal.hypervisor import get_driver  # noqa: E402
from quotas.models import Quota  # noqa: E402
from storage.models import Image  # noqa: E402
from storage.services import image_register  # noqa: E402
from vms import services  # noqa: E402

URI = "qemu:///system"


class TcpConn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv_exact(self, n: int) -> bytes:
        return await self.reader.readexactly(n)

    async def close(self) -> None:
        self.writer.close()


class WsConn:
    def __init__(self, ws) -> None:
        self.ws = ws
        self.buf = bytearray()

    async def send(self, data: bytes) -> None:
        await self.ws.send(data)

    async def recv_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.buf += await self.ws.recv()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def close(self) -> None:
        await self.ws.close()


class Bench:
    def __init__(self, vm, user, session_key: str) -> None:
        self.vm, self.user, self.session_key = vm, user, session_key
        listen, port, password = get_driver(URI).graphics_endpoint(str(vm.uuid), secure=True)
        self.target, self.password = (listen, port), password

    async def _ticket(self) -> str:
        issued = await asyncio.to_thread(console_ticket_issue, actor=self.user, via="cli", vm=self.vm,
                                         kind="screen", session_key=self.session_key)
        return issued.token

    async def open(self, path: str) -> tuple[object, int, int, int, float, float]:
        """Connect through `path` up to ServerInit.

        Returns (conn, width, height, bytes/pixel, seconds to ServerInit, ClientInit -> ServerInit round trip):
        QEMU answers ClientInit at once, so that round trip is the path's own latency.
        """
        if path == "direct":
            t0 = time.perf_counter()
            conn = TcpConn(*await asyncio.open_connection(*self.target))
            conn.writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            handshake = ServerHandshake(self.password)
            while not handshake.done:
                reply = handshake.feed(await conn.reader.read(4096))
                if reply:
                    await conn.send(reply)
        else:
            token = await self._ticket()
            url = (f"ws://127.0.0.1:{PORTAL_PORT}/ws/consoles/vm/{self.vm.pk}/screen/?ticket={token}"
                   if path == "channels" else f"ws://127.0.0.1:{PROXY_PORT}/vm/{self.vm.pk}/screen/?ticket={token}")
            t0 = time.perf_counter()
            ws = await ws_connect(url, origin=ORIGIN, additional_headers={"Cookie": f"sessionid={self.session_key}"},
                                  subprotocols=["binary"], compression=None, proxy=None, max_size=None,
                                  ping_interval=None)
            conn = WsConn(ws)
            assert await conn.recv_exact(12) == b"RFB 003.008\n"
            await conn.send(b"RFB 003.008\n")
            assert await conn.recv_exact(2) == b"\x01\x01"
            await conn.send(b"\x01")
            assert await conn.recv_exact(4) == b"\0\0\0\0"
        t1 = time.perf_counter()
        await conn.send(b"\x01")  # ClientInit, shared
        head = await conn.recv_exact(24)
        width, height, bpp = struct.unpack(">HHB", head[:5])
        await conn.recv_exact(struct.unpack(">I", head[20:24])[0])
        now = time.perf_counter()
        await conn.send(struct.pack(">BBHi", 2, 0, 1, 0))  # SetEncodings: raw only
        return conn, width, height, bpp // 8, now - t0, now - t1

    @staticmethod
    async def read_update(conn, bytes_per_pixel: int) -> int:
        header = await conn.recv_exact(4)
        assert header[0] == 0, f"expected FramebufferUpdate, got type {header[0]}"
        total = 4
        for _ in range(struct.unpack(">H", header[2:4])[0]):
            x, y, w, h, enc = struct.unpack(">HHHHi", await conn.recv_exact(12))
            assert enc == 0, f"unexpected encoding {enc}"
            await conn.recv_exact(w * h * bytes_per_pixel)
            total += 12 + w * h * bytes_per_pixel
        return total

    async def upload(self, conn, bpp: int, megabytes: int, chunk: int = 256 * 1024) -> float:
        """Browser -> VNC server: clipboard messages (framed by the relays); MB/s until QEMU has read them all.

        QEMU reads its socket as fast as it can; a final 1x1 update request, answered in order,
        marks the end.
        """
        message = struct.pack(">BxxxI", 6, chunk) + b"x" * chunk
        count = megabytes * 1024 * 1024 // chunk
        t0 = time.perf_counter()
        for _ in range(count):
            await conn.send(message)
        await conn.send(struct.pack(">BBHHHH", 3, 0, 0, 0, 1, 1))
        await self.read_update(conn, bpp)
        return count * len(message) / (time.perf_counter() - t0) / 1e6

    async def throughput(self, conn, width: int, height: int, bpp: int, updates: int) -> float:
        """VNC server -> browser: full-screen updates back to back (QEMU merges requests in flight, so one
        at a time, and answers each on its display refresh tick: this one is QEMU-bound)."""
        request = struct.pack(">BBHHHH", 3, 0, 0, 0, width, height)
        t0 = time.perf_counter()
        nbytes = 0
        for _ in range(updates):
            await conn.send(request)
            nbytes += await self.read_update(conn, bpp)
        return nbytes / (time.perf_counter() - t0) / 1e6


def _start(cmd: list[str], port: int, log: Path) -> subprocess.Popen:
    fh = open(log, "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=os.environ.copy(), stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[:4]} exited: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{cmd[:4]} did not listen on {port}")


def _ms(values: list[float], q: float = 0.5) -> float:
    values = sorted(values)
    return 1000 * values[min(len(values) - 1, int(q * len(values)))]


async def run(bench: Bench, rounds: int, connects: int, upload_mb: int, updates: int) -> dict:
    paths = ["direct", "channels", "websockify"]
    results = {p: {"connect": [], "rtt": [], "up": [], "down": []} for p in paths}
    for p in paths:  # warm-up: imports, first libvirt connection in each relay process
        conn, *_ = await asyncio.wait_for(bench.open(p), 30)
        await conn.close()
    size = None
    for r in range(rounds):
        print(f"round {r + 1}/{rounds}", flush=True)
        for p in paths[r % 3:] + paths[:r % 3]:
            for _ in range(connects):
                conn, width, height, bpp, elapsed, rtt = await asyncio.wait_for(bench.open(p), 30)
                results[p]["connect"].append(elapsed)
                results[p]["rtt"].append(rtt)
                await conn.close()
            conn, width, height, bpp, *_ = await asyncio.wait_for(bench.open(p), 30)
            size = (width, height, bpp)
            results[p]["up"].append(await asyncio.wait_for(bench.upload(conn, bpp, upload_mb), 300))
            results[p]["down"].append(await asyncio.wait_for(bench.throughput(conn, width, height, bpp, updates), 300))
            await conn.close()
    results["_screen"] = {"size": list(size)}
    return results


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connects", type=int, default=10, help="fresh connections per round and path")
    parser.add_argument("--upload-mb", type=int, default=32, help="MiB of clipboard messages per round and path")
    parser.add_argument("--updates", type=int, default=30, help="full-screen updates per round and path")
    args = parser.parse_args()
    lock = open("/tmp/vmportal-qemu.lock", "w")
    print("waiting for the machine-wide qemu lock…", flush=True)
    fcntl.flock(lock, fcntl.LOCK_EX)
    call_command("migrate", verbosity=0)
    host = host_register(actor=None, name="bench", uri=URI, domain_type="qemu")
    src = Path(TMP) / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), "16M"], check=True)
    image = image_register(actor=None, host=host, name="bench-console", title="bench", source_path=str(src),
                           is_default=True, replace=True)
    user = get_user_model().objects.create_user("bench", password="x")
    Quota.objects.create(user=user, max_vms=10, max_vcpus=10, max_memory_mib=10**5, max_disk_gib=100)
    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.create()
    vm = services.vm_create(actor=user, via="cli", name="bench-console", vcpus=1, memory_mib=64, disk_gib=1).vm
    procs = []
    try:
        procs.append(_start([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(PORTAL_PORT),
                             "portal.asgi:application"], PORTAL_PORT, Path(TMP) / "daphne.log"))
        procs.append(_start([sys.executable, "manage.py", "console_proxy", "--listen", f"127.0.0.1:{PROXY_PORT}"],
                            PROXY_PORT, Path(TMP) / "proxy.log"))
        time.sleep(2)  # let SeaBIOS draw its screen
        results = asyncio.run(run(Bench(vm, user, session.session_key), args.rounds, args.connects,
                                    args.upload_mb, args.updates))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        deleted = services.vm_delete(actor=user, via="cli", vm=vm)
        if deleted.job:
            deleted.job.refresh_from_db()
        img = Image.objects.get(pk=image.pk)
        get_driver(URI).delete_volume(pool=settings.STORAGE_POOL, name=img.volume_name)
    width, height, bpp = results.pop("_screen")["size"]
    direct = results["direct"]
    rows = []
    for path, label in (("direct", "direct TCP to the VNC port"), ("channels", "Channels relay (daphne)"),
                        ("websockify", "websockify tier (`console_proxy`)")):
        r = results[path]
        added = "—" if path == "direct" else f"+{_ms(r['rtt']) - _ms(direct['rtt']):.2f}"
        rows.append(f"| {label} | {_ms(r['connect']):.1f} | {_ms(r['rtt']):.2f} | {_ms(r['rtt'], 0.95):.2f} | "
                    f"{added} | {statistics.median(r['up']):.0f} | {statistics.median(r['down']):.1f} |")

    def ratio(key: str) -> float:
        return statistics.median(results["channels"][key]) / statistics.median(results["websockify"][key])

    n = args.rounds * args.connects
    lines = [
        f"VNC of one firmware-only VM ({width}×{height}, {8 * bpp} bpp, raw encoding) on `{URI}`, "
        f"{args.rounds} interleaved rounds; per path {n} fresh connections, {args.rounds}× {args.upload_mb} MiB up "
        f"and {args.rounds}× {args.updates} full-screen updates down; {time.strftime('%Y-%m-%d')}. "
        "Clients are Python (asyncio, `websockets`) on the same 2-core machine as QEMU and the relays.",
        "",
        "| path | connect → ServerInit, median ms | round trip (ClientInit → ServerInit), median ms | p95 ms | "
        "added latency, ms | up: browser → VNC, MB/s | down: full-screen updates, MB/s |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"**Channels / websockify throughput: up {ratio('up'):.2f}×, down {ratio('down'):.2f}×** (target ≥ 0.9×).",
        "",
        "- *connect* includes, for the relays, the ticket redemption (database), reading the VNC endpoint from "
        "libvirt's live XML and the relay's own VNC password handshake; websockify also forks a process per "
        "connection.",
        "- *round trip*: QEMU answers ClientInit at once, so this is each path's own latency; *added* is the "
        "difference of medians with direct TCP.",
        "- *up* is relay-bound: the relays frame every browser message (RFB parsing) before passing it on.",
        "- *down* is bound by QEMU, which sends a requested update on its next display refresh tick; the "
        "relays keep up with it.",
    ]
    write_section("consoles", "Console relay: Channels vs websockify vs direct VNC", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
