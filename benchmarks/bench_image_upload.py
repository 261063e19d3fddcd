"""Image upload: a ~256 MiB raw disk through the portal's tus API (daphne on loopback) vs `cp` into a pool directory.

The same file, on the same file system, side by side in one run:

- tus: `POST /api/uploads/` then `PATCH` chunks of --chunk-mib MiB (Token auth, `requests`) to a live daphne
  serving the portal on 127.0.0.1 as `runportal` does (`portal.serve`); timed from the creation request to the last 204. The bytes land in
  the staging directory (IMAGE_STAGING_DIR/uploads/<id>), streamed in 1 MiB pieces;
- cp: `cp` of the same file into a pool directory (the `cp` an administrator would do by hand);
- import: the `image.import` job on that upload (detect, `qemu-img info`, `qemu-img convert` to qcow2, the
  SHA-256 of the result), timed from `POST /api/images/import/` to its answer (the immediate task backend
  runs the job inside the request). The host is libvirt's test driver, so the final copy into the pool
  through libvirt is not included (on qemu:///system it is one more stream of the converted file).

Rounds alternate the order (tus first, then cp first). The throwaway data dir, its database and daphne go
at the end, also on failure.

    .venv/bin/python benchmarks/bench_image_upload.py [--size-mib 256] [--chunk-mib 16] [--rounds 3]

Writes the `image_upload` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TMP = tempfile.mkdtemp(prefix="vmportal-bench-upload-")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PORT = _free_port()
BASE = f"http://127.0.0.1:{PORT}"
os.environ.update({
    "DJANGO_SETTINGS_MODULE": "portal.settings.base",
    "PORTAL_DATA_DIR": TMP,
    "PORTAL_TASKS_BACKEND": "django.tasks.backends.immediate.ImmediateBackend",
    "PORTAL_INSTANCE_ID": f"bench-{uuid.uuid4().hex[:6]}",
    "PORTAL_DOMAIN_PREFIX": "vmpbench",
    "PORTAL_LOG_LEVEL": "WARNING",
    "PORTAL_STORAGE_DIR": f"{TMP}/pool",
    "PORTAL_IMAGE_STAGING_DIR": f"{TMP}/staging",
})
os.environ.pop("PORTAL_DATABASE_URL", None)

import django  # noqa: E402

django.setup()

import requests  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402

from benchmarks.report import write_section  # noqa: E402
from cluster.services import host_register  # noqa: E402
from quotas.models import Quota  # noqa: E402

MIB = 1024 * 1024


def make_disk(path: Path, size_mib: int) -> None:
    """A raw disk: an MBR signature, then incompressible data (what a real disk's used blocks look like)."""
    with open(path, "wb") as fh:
        block = os.urandom(MIB)
        for i in range(size_mib):
            piece = bytearray(block) if i else bytearray(b"\0" * 510 + b"\x55\xaa") + block[512:]
            piece[-8:] = i.to_bytes(8, "big")  # every MiB different
            fh.write(piece)
    os.sync()


def tus_upload(session: requests.Session, path: Path, chunk: int) -> tuple[float, str]:
    size = path.stat().st_size
    t0 = time.perf_counter()
    meta = f"filename {base64.b64encode(path.name.encode()).decode()}"
    created = session.post(f"{BASE}/api/uploads/", headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(size),
                                                             "Upload-Metadata": meta})
    created.raise_for_status()
    url = created.headers["Location"]
    offset = 0
    with open(path, "rb") as fh:
        while offset < size:
            data = fh.read(chunk)
            answer = session.patch(url, data=data, headers={
                "Tus-Resumable": "1.0.0", "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream"})
            if answer.status_code != 204:
                raise RuntimeError(f"PATCH answered {answer.status_code}: {answer.text[:300]}")
            offset = int(answer.headers["Upload-Offset"])
    return time.perf_counter() - t0, url.rstrip("/").rsplit("/", 1)[1]


def cp(path: Path, pool: Path) -> float:
    target = pool / f"cp-{uuid.uuid4().hex[:6]}.img"
    t0 = time.perf_counter()
    subprocess.run(["cp", str(path), str(target)], check=True)
    subprocess.run(["sync", str(target)], check=True)
    elapsed = time.perf_counter() - t0
    target.unlink()
    return elapsed


def import_job(session: requests.Session, upload_id: str, name: str) -> float:
    t0 = time.perf_counter()
    answer = session.post(f"{BASE}/api/images/import/", json={"source": "upload", "upload": upload_id, "name": name})
    elapsed = time.perf_counter() - t0
    if answer.status_code != 202:
        raise RuntimeError(f"import answered {answer.status_code}: {answer.text[:300]}")
    job = session.get(answer.json()["job"]["url"]).json()
    if job["status"] != "succeeded":
        raise RuntimeError(f"import job {job['status']}: {job['error']}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--chunk-mib", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    daphne = None
    try:
        call_command("migrate", verbosity=0)
        host_register(actor=None, name="bench", uri="test:///default", domain_type="qemu")
        user = get_user_model().objects.create_user("bench", password="x")
        Quota.objects.create(user=user, max_vms=1, max_vcpus=1, max_memory_mib=128, max_disk_gib=1000)
        token = Token.objects.create(user=user).key
        pool = Path(TMP) / "pool"
        pool.mkdir(exist_ok=True)
        disk = Path(TMP) / "disk.img"
        make_disk(disk, args.size_mib)
        log = open(Path(TMP) / "daphne.log", "wb")
        # portal.serve: daphne as `runportal` runs it (request bodies passed on in 1 MiB pieces)
        daphne = subprocess.Popen([sys.executable, "-m", "portal.serve", "-b", "127.0.0.1", "-p", str(PORT),
                                   "portal.asgi:application"], cwd=ROOT, env=os.environ.copy(), stdout=log,
                                  stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", PORT), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or daphne.poll() is not None:
                    raise RuntimeError("daphne did not start") from None
                time.sleep(0.1)
        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"
        tus_times, cp_times, import_times = [], [], []
        for round_ in range(args.rounds):
            order = ["tus", "cp"] if round_ % 2 == 0 else ["cp", "tus"]
            for what in order:
                if what == "cp":
                    cp_times.append(cp(disk, pool))
                else:
                    elapsed, upload_id = tus_upload(session, disk, args.chunk_mib * MIB)
                    tus_times.append(elapsed)
                    import_times.append(import_job(session, upload_id, f"bench-{round_}"))
            print(f"round {round_ + 1}: tus {tus_times[-1]:.2f} s, cp {cp_times[-1]:.2f} s, "
                  f"import {import_times[-1]:.2f} s", flush=True)
        size = args.size_mib
        tus_s, cp_s, imp_s = (statistics.median(v) for v in (tus_times, cp_times, import_times))
        body = "\n".join([
            f"A {size} MiB raw disk (incompressible data), {args.rounds} rounds, medians. tus: `POST /api/uploads/` "
            f"and `PATCH` chunks of {args.chunk_mib} MiB to daphne (`portal.serve`, as `runportal` runs it) on 127.0.0.1 "
            "(Token auth, `requests`), into the "
            "staging directory; cp: `cp` + `sync` of the same file into a pool directory on the same file system; "
            "import: the `image.import` job on the finished upload (detect, `qemu-img info`/`check`, `qemu-img "
            "convert` to qcow2, SHA-256; libvirt's test driver, so without the final stream into a real pool).",
            "",
            "| path | time | throughput |",
            "|---|---:|---:|",
            f"| tus upload through the portal | {tus_s:.2f} s | {size / tus_s:.0f} MiB/s |",
            f"| `cp` into the pool directory | {cp_s:.2f} s | {size / cp_s:.0f} MiB/s |",
            f"| import job (probe, convert, checksum) | {imp_s:.2f} s | {size / imp_s:.0f} MiB/s |",
            "",
            f"The upload takes {tus_s / cp_s:.1f}× as long as `cp`: every byte crosses HTTP on loopback, daphne "
            "passes each PATCH body to Django in 1 MiB pieces (`portal.serve`; daphne's own default of 8 KiB made "
            "uploads about 50 MiB/s here), Django spools it to a temporary file, and the portal copies that into "
            "the staging file and fsyncs: every byte is written twice. Nothing of a chunk is held in memory.",
            "",
            f"Machine: {os.cpu_count()} CPUs; `{sys.executable} benchmarks/bench_image_upload.py --size-mib {size} "
            f"--chunk-mib {args.chunk_mib} --rounds {args.rounds}`.",
        ])
        write_section("image_upload", "Image upload: the portal's tus API vs cp into the pool", body)
        print(body)
    finally:
        if daphne is not None:
            daphne.send_signal(signal.SIGTERM)
            try:
                daphne.wait(10)
            except subprocess.TimeoutExpired:
                daphne.kill()
        shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
