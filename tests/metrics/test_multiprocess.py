"""The request-duration histogram under two real gunicorn workers (portal.gunicorn_conf, no qemu): each
worker writes its own prometheus_client files in PROMETHEUS_MULTIPROC_DIR, and a scrape answered by either
worker counts every worker's requests. The directory starts empty (a previous run's files are removed),
and one the master made itself goes when it exits."""

from __future__ import annotations

import glob
import os
import re
import signal
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from tests.browser.conftest import _postgres_url
from tests.support import free_port, processes, wait_for

pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(connection.vendor != "postgresql", reason="gunicorn's workers share the test database")]

TOKEN = "p" * 40
WEB = [sys.executable, "-m", "gunicorn", "-c", "python:portal.gunicorn_conf"]


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _healthz_count(base: str) -> float:
    status, body = _get(f"{base}/metrics", TOKEN)
    assert status == 200, body[:500]
    family = {f.name: f for f in text_string_to_metric_families(body.decode())}[
        "vmportal_http_request_duration_seconds"]
    return sum(s.value for s in family.samples if s.name.endswith("_count")
               and s.labels == {"view": "healthz", "method": "GET", "status_class": "2xx"})


def _worker_pids(directory: Path) -> set[str]:
    return {m.group(1) for f in glob.glob(str(directory / "histogram_*.db"))
            if (m := re.search(r"histogram_(\d+)\.db$", f))}


def test_two_workers_scrapes_sum_every_workers_requests(db, tmp_path):
    prom = tmp_path / "prom"
    prom.mkdir()
    (prom / "counter_1.db").write_bytes(b"stale: an earlier run's file")
    env = {"DJANGO_SETTINGS_MODULE": "tests.browser.settings",
           "PORTAL_DATABASE_URL": _postgres_url(connection.settings_dict), "PORTAL_METRICS_TOKEN": TOKEN,
           "PROMETHEUS_MULTIPROC_DIR": str(prom)}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with processes(tmp_path, env) as procs:
        procs.start("web", [*WEB, "-b", f"127.0.0.1:{port}", "-w", "2", "portal.asgi:application"])
        procs.wait_for_port("web", port, timeout=90)
        assert not (prom / "counter_1.db").exists()  # wiped at start

        # Requests in parallel until both workers have served some (each then has its own file).
        sent = 0

        def both_served() -> bool:
            nonlocal sent
            with ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(lambda _: _get(f"{base}/healthz")[0], range(8)))
            assert statuses == [200] * 8
            sent += 8
            return len(_worker_pids(prom)) >= 2

        wait_for(both_served, 60, "both gunicorn workers serving requests")
        assert len(_worker_pids(prom)) == 2
        # Whichever worker answers the scrape, it reports all of them.
        counts = {_healthz_count(base) for _ in range(6)}
        assert counts == {float(sent)}, (counts, sent)

        # A worker that dies: the master starts another, and the dead one's requests still count.
        victim = int(sorted(_worker_pids(prom))[0])
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: _get(f"{base}/healthz")[0] == 200 and len(_worker_pids(prom)) >= 2, 60,
                 "the master replacing its worker")
        sent += 1
        assert _healthz_count(base) >= sent
    assert prom.is_dir()  # a directory named by the environment stays (wiped at the next start)


def test_without_a_directory_the_master_makes_one_and_removes_it(db, tmp_path):
    """No PROMETHEUS_MULTIPROC_DIR: a temporary directory of the master's own, gone after it exits."""
    env = {"DJANGO_SETTINGS_MODULE": "tests.browser.settings",
           "PORTAL_DATABASE_URL": _postgres_url(connection.settings_dict), "PORTAL_METRICS_TOKEN": TOKEN,
           "TMPDIR": str(tmp_path)}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    with processes(tmp_path, env) as procs:
        proc = procs.start("web", [*WEB, "-b", f"127.0.0.1:{port}", "-w", "2", "portal.asgi:application"])
        procs.wait_for_port("web", port, timeout=90)
        made = glob.glob(str(tmp_path / "vmportal-metrics-*"))
        assert len(made) == 1
        for _ in range(4):
            assert _get(f"{base}/healthz")[0] == 200
        assert _healthz_count(base) == 4
        assert glob.glob(os.path.join(made[0], "histogram_*.db"))
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert not Path(made[0]).exists()
