"""The web tier under load at 10,000 VMs: gunicorn with uvicorn workers vs one daphne, and the framework's floor.

Seeds its own PostgreSQL database (10,000 VM rows, 2,000 of them one user's, the rest ~200 other users',
a few finished jobs each; rows only, on a test-driver host row: no libvirt domain), then starts the web
tier as separate processes on 127.0.0.1, each in turn:

- gunicorn: `gunicorn -c python:portal.gunicorn_conf -w 2 portal.asgi:application` (the production way: uvicorn
  workers, a pooled database connection per worker);
- daphne: one `python -m portal.serve` process (today's way);

both with DEBUG off, a secret key, PORTAL_ALLOWED_HOSTS=127.0.0.1 and a Redis channel layer. On each,
wrk (50 connections) measures in turn:

- `GET /api/vms/` (a page of 50, API token), and side by side the bare Django view
  (benchmarks/load_app.py: the same 50 rows by `values()` + `JsonResponse`, no DRF) on the same server;
- `GET /api/vms/{id}/` (the user's VMs in turn);
- `GET /` the web VM list (a signed-in session cookie).

It reports requests/s, p50, p99 and errors (non-2xx answers + socket errors and timeouts), checks the
targets of issue #13 on the production stack, writes the `load` section of docs/benchmarks.md, then stops
its processes (by PID) and drops its database.

    .venv/bin/python benchmarks/bench_load.py [--quick] [--duration 30] [--clients 50] [--keep-db]

Needs wrk (Debian package `wrk`), gunicorn and uvicorn-worker. The database is
PORTAL_BENCH_LOAD_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/portal_bench_load; its name
must contain `bench_load`: it is dropped and created again); PORTAL_DATABASE_URL is not used.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import importlib.util
import json
import os
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TMP = tempfile.mkdtemp(prefix="vmportal-bench-load-")
LUA = Path(__file__).resolve().parent / "load_wrk.lua"
DB_URL = os.environ.get("PORTAL_BENCH_LOAD_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/portal_bench_load")
DB_NAME = unquote(urlparse(DB_URL).path.lstrip("/"))
if "bench_load" not in DB_NAME:
    sys.exit(f"bench_load: the database name must contain 'bench_load' (it is dropped), got {DB_NAME!r}")
REDIS_URL = f"redis://127.0.0.1:6379/{os.environ.get('PORTAL_BENCH_LOAD_REDIS_DB', '13')}"
# The servers' environment, and this script's (the same secret key: it signs the session cookie).
SERVER_ENV = {
    "DJANGO_SETTINGS_MODULE": "benchmarks.settings_load",
    "PORTAL_DEBUG": "0",
    "PORTAL_SECRET_KEY": secrets.token_urlsafe(50),
    "PORTAL_ALLOWED_HOSTS": "127.0.0.1",
    # Plain HTTP on loopback (docs/deployment.md's trial set-up): TLS would be nginx's, in front.
    "PORTAL_BASE_URL": "http://127.0.0.1",
    "PORTAL_SECURE_SSL_REDIRECT": "0",
    "PORTAL_SECURE_COOKIES": "0",
    "PORTAL_HSTS_SECONDS": "0",
    "PORTAL_DATABASE_URL": DB_URL,
    "PORTAL_REDIS_URL": REDIS_URL,
    "PORTAL_DATA_DIR": TMP,
    "PORTAL_INSTANCE_ID": f"bench-{uuid.uuid4().hex[:6]}",
    "PYTHONPATH": str(ROOT),
}
os.environ.update(SERVER_ENV)

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.urls import reverse  # noqa: E402
from psycopg import sql  # noqa: E402

from benchmarks.load_app import PAGE_SIZE, seed, session_for  # noqa: E402
from benchmarks.report import write_section  # noqa: E402

STARTED: list[subprocess.Popen] = []  # every server this script started, stopped by PID at the end


def _admin_db(query: sql.Composable) -> None:
    """Run `query` on the server's maintenance database (CREATE/DROP DATABASE cannot run in the bench one)."""
    parsed = urlparse(DB_URL)
    with psycopg.connect(parsed._replace(path="/postgres").geturl(), autocommit=True) as conn:
        conn.execute(query)


def db_recreate() -> None:
    _admin_db(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB_NAME)))
    _admin_db(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB_NAME)))


def db_drop() -> None:
    connections.close_all()
    _admin_db(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB_NAME)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- CPU accounting: how busy the machine was, and who used it ------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy (not idle or waiting for I/O) since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / CLK_TCK


def group_cpu_s(pgid: int) -> float:
    """CPU seconds used so far by the live processes of process group `pgid` (a server and its workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            rest = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(rest[2]) == pgid:  # fields after the name: state ppid pgrp ...; utime, stime are 14, 15
            total += int(rest[11]) + int(rest[12])
    return total / CLK_TCK


# --- the servers -----------------------------------------------------------------------------------------

@dataclass
class Server:
    name: str
    command: list[str]
    port: int
    proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return Path(TMP) / f"{self.name}.log"

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(self.command, cwd=ROOT, env=os.environ.copy(), stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        STARTED.append(self.proc)

    def log_errors(self) -> collections.Counter[str]:
        """The exceptions the server logged (each traceback's last line, cut at 150 characters), counted."""
        pattern = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): ")
        return collections.Counter(line[:150] for line in self.log.read_text(errors="replace").splitlines()
                                   if pattern.match(line))

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    def wait_ready(self, url: str, headers: dict[str, str], deadline_s: float = 90) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                if get(url, headers)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer {url} within {deadline_s} s:\n{self.log_tail()}")


def stop(proc: subprocess.Popen) -> None:
    """Stop a server this script started: SIGTERM to its process group (its PID), SIGKILL after 20 s."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    if proc in STARTED:
        STARTED.remove(proc)


def servers(names: list[str], workers: int) -> list[Server]:
    python = sys.executable
    known = {
        "gunicorn": lambda port: [python, "-m", "gunicorn", "-c", "python:portal.gunicorn_conf", "-w", str(workers),
                                  "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5", "portal.asgi:application"],
        "daphne": lambda port: [python, "-m", "portal.serve", "-b", "127.0.0.1", "-p", str(port),
                                "portal.asgi:application"],
    }
    result = []
    for name in names:
        if name not in known:
            sys.exit(f"bench_load: unknown server {name!r} (known: {', '.join(known)})")
        port = free_port()
        result.append(Server(name, known[name](port), port))
    return result


def get(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --- the load ---------------------------------------------------------------------------------------------

@dataclass
class Endpoint:
    key: str
    label: str
    path: str
    headers: dict[str, str]
    paths: tuple[str, ...] = ()  # taken in turn (else `path` every time)


@dataclass
class Result:
    server: str
    endpoint: Endpoint
    stats: dict
    load_before: float
    busy_cores: float
    server_cores: float
    wrk_cores: float
    db_connections: int  # the most open at once to the bench database during the run

    @property
    def seconds(self) -> float:
        return self.stats["duration_us"] / 1e6

    @property
    def ok(self) -> int:
        return sum(count for code, count in self.stats["statuses"].items() if 200 <= int(code) < 300)

    @property
    def rps(self) -> float:
        return self.stats["requests"] / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        socket_errors = sum(self.stats[k] for k in ("connect", "read", "write", "timeout"))
        return self.stats["requests"] - self.ok + socket_errors

    def error_text(self) -> str:
        others = {code: n for code, n in self.stats["statuses"].items() if not 200 <= int(code) < 300}
        parts = [f"{n}× {code}" for code, n in sorted(others.items())]
        parts += [f"{self.stats[k]} {k}" for k in ("connect", "read", "write", "timeout") if self.stats[k]]
        return f"{self.errors}" + (f" ({', '.join(parts)})" if parts else "")


def wrk(server: Server, endpoint: Endpoint, *, duration: float, clients: int, threads: int,
        timeout: float) -> dict:
    command = ["wrk", "-t", str(threads), "-c", str(clients), "-d", f"{max(1, round(duration))}s",
               "--timeout", f"{timeout:g}s", "-s", str(LUA)]
    for name, value in endpoint.headers.items():
        command += ["-H", f"{name}: {value}"]
    command.append(server.base + endpoint.path)
    env = {**os.environ, "BENCH_PATHS": ",".join(endpoint.paths)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=duration + timeout + 60)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if done.returncode or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    return json.loads(line.removeprefix("BENCH_JSON "))


class ConnectionPeak(threading.Thread):
    """The most PostgreSQL connections to the bench database seen at once (sampled every 0.2 s)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0
        self.stopping = threading.Event()
        parsed = urlparse(DB_URL)
        self.conn = psycopg.connect(parsed._replace(path="/postgres").geturl(), autocommit=True)

    def run(self) -> None:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
        while not self.stopping.wait(0.2):
            row = self.conn.execute(query, (DB_NAME,)).fetchone()
            self.peak = max(self.peak, row[0] if row else 0)

    def __enter__(self) -> ConnectionPeak:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.join()
        self.conn.close()


def measure(server: Server, endpoint: Endpoint, **options) -> Result:
    assert server.proc is not None
    load_before = os.getloadavg()[0]
    busy0, server0 = machine_busy_s(), group_cpu_s(server.proc.pid)
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    with ConnectionPeak() as connections_peak:
        stats = wrk(server, endpoint, **options)
    elapsed = time.monotonic() - t0
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy, server_cpu = machine_busy_s() - busy0, group_cpu_s(server.proc.pid) - server0
    wrk_cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    result = Result(server.name, endpoint, stats, load_before, busy / elapsed, server_cpu / elapsed,
                    wrk_cpu / elapsed, connections_peak.peak)
    print(f"  {server.name:8} {endpoint.key:10} {result.rps:7.1f} req/s  p50 {stats['p50_us'] / 1000:7.1f} ms  "
          f"p99 {stats['p99_us'] / 1000:7.1f} ms  errors {result.error_text()}  "
          f"db connections <= {result.db_connections}", flush=True)
    return result


def check(server: Server, endpoints: dict[str, Endpoint], owned: int) -> None:
    """Before the load: each endpoint answers 200 with what it should, and the bare view gives the API's rows."""
    def json_of(key: str, path: str | None = None) -> dict:
        endpoint = endpoints[key]
        status, body = get(server.base + (path or endpoint.path), endpoint.headers)
        if status != 200:
            raise RuntimeError(f"{server.name}: {endpoint.label} answered {status}: {body[:300]!r}")
        return json.loads(body)

    api, bare = json_of("api_list"), json_of("bare_list")
    api_ids = [vm["id"] for vm in api["results"]]
    if api["count"] != owned or len(api_ids) != PAGE_SIZE:
        raise RuntimeError(f"{server.name}: the API list shows {api['count']} VMs, {len(api_ids)} on the page")
    if bare["count"] != owned or [vm["id"] for vm in bare["results"]] != api_ids:
        raise RuntimeError(f"{server.name}: the bare view's page is not the API's")
    detail = endpoints["api_detail"]
    if json_of("api_detail", detail.paths[0])["id"] != int(detail.paths[0].rstrip("/").rsplit("/", 1)[1]):
        raise RuntimeError(f"{server.name}: the detail answered another VM")
    status, page = get(server.base + endpoints["web_list"].path, endpoints["web_list"].headers)
    if status != 200 or api["results"][0]["name"].encode() not in page:
        raise RuntimeError(f"{server.name}: the web list answered {status} without the user's first VM")
    if get(server.base + endpoints["bare_list"].path, {})[0] != 401:
        raise RuntimeError(f"{server.name}: the bare view answers without a token")


# --- the report ---------------------------------------------------------------------------------------------

def ms(us: float) -> str:
    return f"{us / 1000:.0f}" if us >= 10_000 else f"{us / 1000:.1f}"


def report(results: list[Result], server_errors: dict[str, collections.Counter[str]], args: argparse.Namespace,
           seed_s: float, mode: str) -> str:
    by = {(r.server, r.endpoint.key): r for r in results}
    lines = ["| server | endpoint | requests/s | p50 ms | p99 ms | 2xx | errors | database connections, peak "
             "| CPU cores used: server / wrk / rest of the machine | load avg before |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rest = max(0.0, r.busy_cores - r.server_cores - r.wrk_cores)
        lines.append(f"| {r.server} | {r.endpoint.label} | {r.rps:.1f} | {ms(r.stats['p50_us'])} | "
                     f"{ms(r.stats['p99_us'])} | {r.ok} | {r.error_text()} | {r.db_connections} | {r.server_cores:.2f} / "
                     f"{r.wrk_cores:.2f} / {rest:.2f} | {r.load_before:.2f} |")
    ratios = []
    for server in dict.fromkeys(r.server for r in results):
        api, bare = by.get((server, "api_list")), by.get((server, "bare_list"))
        if api and bare and bare.rps:
            ratios.append(f"{server}: **{api.rps / bare.rps:.2f}×** ({api.rps:.1f} / {bare.rps:.1f} requests/s)")
    target_server = "gunicorn" if any(r.server == "gunicorn" for r in results) else results[0].server
    api, bare = by.get((target_server, "api_list")), by.get((target_server, "bare_list"))
    errors = sum(r.errors for r in results if r.server == target_server)
    targets = ["| target (on " + target_server + ") | measured | |", "|---|---|---|",
               f"| 0 errors on every endpoint | {errors} | {'pass' if errors == 0 else 'FAIL'} |"]
    if api:
        p99 = api.stats["p99_us"] / 1000
        targets += [f"| API list ≥ 200 requests/s | {api.rps:.1f} | {'pass' if api.rps >= 200 else 'FAIL'} |",
                    f"| API list p99 < 300 ms | {p99:.0f} ms | {'pass' if p99 < 300 and api.ok else 'FAIL'} |"]
    if api and bare and bare.rps:
        ratio = api.rps / bare.rps
        targets.append(f"| API list ≥ 0.5× the bare view's throughput | {ratio:.2f}× | "
                       f"{'pass' if ratio >= 0.5 else 'FAIL'} |")
    pg_version = connection.pg_version // 10000  # type: ignore[attr-defined]
    with connection.cursor() as cursor:
        cursor.execute("SHOW max_connections")
        max_connections = cursor.fetchone()[0]
    logged = [f"- {server}: " + "; ".join(f"{n}× `{text}`" for text, n in counter.most_common(3))
              for server, counter in server_errors.items() if counter]
    return "\n".join([
        f"{args.vms:,} VMs on PostgreSQL ({args.owned:,} of them the measured user's, the rest spread over "
        f"{args.users} other users; {args.jobs_per_vm} finished jobs per VM; rows only, on a test-driver host row; "
        f"seeded in {seed_s:.1f} s). {args.clients} concurrent connections (wrk, {args.wrk_threads} thread(s), "
        f"request timeout {args.timeout:g} s) for **{args.duration:g} s per endpoint ({mode})**, one endpoint "
        f"after the other, {datetime.date.today().isoformat()}. DEBUG off, Redis channel layer, "
        f"{os.cpu_count()} cores shared by the servers, wrk, PostgreSQL {pg_version} (max_connections {max_connections}) "
        f"and whatever else runs on the machine.",
        "",
        f"- **gunicorn**: `gunicorn -c python:portal.gunicorn_conf -w {args.workers} portal.asgi:application` "
        "(the production way); **daphne**: one `python -m portal.serve` process (today's `runportal`).",
        "- *API list*: `GET /api/vms/` (a page of 50 and the count, API token); *bare view*: the same 50 rows "
        "and count from the same selector as JSON by `values()` + `JsonResponse`, no DRF "
        "(`benchmarks/load_app.py`), on the same server: the framework's floor; *API detail*: "
        "`GET /api/vms/{id}/` over 100 of the user's VMs in turn; *web list*: `GET /` with a signed-in "
        "session cookie (50 VMs a page).",
        "- *errors*: non-2xx answers plus socket errors and requests unanswered after the timeout (wrk's "
        "latencies count answered requests only). *CPU cores used*: averages over the run from /proc; "
        "*rest of the machine* includes PostgreSQL serving these requests as well as other work.",
        "",
        "\n".join(lines),
        "",
        "API list as a fraction of the bare view's throughput: " + "; ".join(ratios) + ".",
        "",
        "\n".join(targets),
        *(["", "Exceptions in the servers' logs (most frequent first):", *logged] if logged else []),
        "",
        "*Caveat*: server and load generator share this 2-core machine, and other work (the other "
        "sessions' tests) may run beside it: compare rows of one run, and read the load average and the "
        "*rest of the machine* column before comparing runs.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="5 s per endpoint (and 1 s warm-ups)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load per endpoint")
    parser.add_argument("--clients", type=int, default=50, help="concurrent connections")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=10.0, help="wrk's per-request timeout, s")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn's worker processes")
    parser.add_argument("--servers", default="gunicorn,daphne", help="comma-separated: gunicorn, daphne")
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--owned", type=int, default=2_000, help="VMs of the measured user")
    parser.add_argument("--users", type=int, default=200, help="other users owning the rest")
    parser.add_argument("--jobs-per-vm", type=int, default=2)
    parser.add_argument("--keep-db", action="store_true", help="leave the database for a look afterwards")
    parser.add_argument("--no-write", action="store_true", help="print the section only")
    args = parser.parse_args()
    if args.quick:
        args.duration = 5.0
    warmup = 1.0 if args.quick else 3.0
    mode = "quick mode" if args.quick else "full run" if args.duration == 30 else "a shortened run"
    if shutil.which("wrk") is None:
        sys.exit("bench_load: wrk is missing (apt-get install wrk; scripts/setup.sh --test installs it)")
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    if "gunicorn" in names and not (importlib.util.find_spec("gunicorn") and importlib.util.find_spec("uvicorn_worker")):
        sys.exit("bench_load: gunicorn and uvicorn-worker are not installed in this venv")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up below

    results: list[Result] = []
    server_errors: dict[str, collections.Counter[str]] = {}
    completed = False
    try:
        print(f"==> database {DB_NAME}: create, migrate, seed {args.vms} VMs", flush=True)
        db_recreate()
        call_command("migrate", verbosity=0)
        t0 = time.monotonic()
        seeded = seed(vms=args.vms, owned=args.owned, other_users=args.users, jobs_per_vm=args.jobs_per_vm)
        seed_s = time.monotonic() - t0
        cookie = f"{settings.SESSION_COOKIE_NAME}={session_for(seeded.user)}"
        token = {"Authorization": f"Token {seeded.token}"}
        sample = random.Random(13).sample(seeded.vm_ids, min(100, len(seeded.vm_ids)))
        endpoints = {e.key: e for e in [
            Endpoint("api_list", "API list", reverse("api-vm-list"), token),
            Endpoint("bare_list", "bare view (floor)", reverse("bench-bare-vms"), token),
            Endpoint("api_detail", "API detail", reverse("api-vm-detail", kwargs={"pk": sample[0]}), token,
                     tuple(reverse("api-vm-detail", kwargs={"pk": pk}) for pk in sample)),
            Endpoint("web_list", "web list page", reverse("vms:list"), {"Cookie": cookie}),
        ]}
        connections.close_all()
        options = {"clients": args.clients, "threads": args.wrk_threads, "timeout": args.timeout}
        for server in servers(names, args.workers):
            print(f"==> {server.name}: {' '.join(server.command[1:])}", flush=True)
            server.start()
            try:
                server.wait_ready(server.base + endpoints["api_list"].path, token)
                check(server, endpoints, args.owned)
                for endpoint in endpoints.values():  # every worker imports and connects before the measure
                    wrk(server, endpoint, duration=warmup, **options)
                for endpoint in endpoints.values():
                    results.append(measure(server, endpoint, duration=args.duration, **options))
            finally:
                if server.proc is not None:
                    stop(server.proc)
            server_errors[server.name] = server.log_errors()
        connection.ensure_connection()
        body = report(results, server_errors, args, seed_s, mode)
        print(body)
        if not args.no_write:
            write_section("load", f"Load: {args.vms:,} VMs, {args.clients} clients, gunicorn + uvicorn vs daphne",
                          body)
        completed = True
    finally:
        for proc in list(STARTED):
            stop(proc)
        if not args.keep_db:
            db_drop()
        if completed and not any(r.errors for r in results):
            shutil.rmtree(TMP, ignore_errors=True)
        else:
            print(f"bench_load: server logs kept in {TMP}", file=sys.stderr)


if __name__ == "__main__":
    main()
