"""Helpers shared by tests that start real portal processes (daphne, workers, the monitor, the
console proxy, `runportal`) and by the browser tests (Debian chromium through Playwright)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings

CHROMIUM = os.environ.get("PORTAL_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
MANAGE = [sys.executable, "manage.py"]
DAPHNE = [sys.executable, "-m", "daphne", "-b", "127.0.0.1"]


def screenshot_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where browser tests save screenshots: var/screenshots/ (ignored by git), so a test run never
    dirties the work tree; docs/screenshots/ only with PORTAL_SCREENSHOTS=1 (`make screenshots`)."""
    environ = os.environ if environ is None else environ
    base = Path(settings.BASE_DIR)
    if environ.get("PORTAL_SCREENSHOTS", "").strip().lower() not in {"", "0", "false", "no", "off"}:
        return base / "docs" / "screenshots"
    return base / "var" / "screenshots"


def wait_for(predicate, timeout: float, what: str, *, poll: float = 0.1):
    """Poll `predicate()` until it is truthy and return its value; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"{what} not seen within {timeout} s"
        time.sleep(poll)
    return value


def api_client(user):
    """DRF's test client, authenticated as `user`."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client


def web_client(user):
    """Django's test client with `user` signed in."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    """Child processes of one test, each with its own log file; all are ended (by PID) at the end.

    The logs' tails are printed when they stop, so pytest shows them for a failed test.
    """

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None, *, inherit: bool = True):
        """`env` is added to this process's environment, or (`inherit=False`) is the whole of it."""
        self.log_dir = log_dir
        # PYTHONFAULTHANDLER: a stuck child dumps its threads' stacks into its log on SIGABRT (see diagnose).
        self.env = {**(os.environ if inherit else {}), "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1",
                    **(env or {})}
        self.env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        self.procs: dict[str, tuple[subprocess.Popen, Path, bool]] = {}

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def run(self, argv: list[str], **env: str) -> subprocess.CompletedProcess:
        """Run a command to its end (e.g. `manage.py migrate`)."""
        return subprocess.run(argv, cwd=settings.BASE_DIR, env={**self.env, **env}, capture_output=True,
                              text=True, timeout=120)

    def start(self, name: str, argv: list[str], *, port: int | None = None, group: bool = False,
              **env: str) -> subprocess.Popen:
        """Start `argv`; with `port`, wait until it listens there. `group`: its own process group
        (for commands that start children of their own, such as `runportal`)."""
        log = self.log_dir / f"{name}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(argv, cwd=settings.BASE_DIR, env={**self.env, **env}, stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=group)
        self.procs[name] = (proc, log, group)
        if port is not None:
            self.wait_for_port(name, port)
        return proc

    def wait_for_port(self, name: str, port: int, timeout: float = 30) -> None:
        proc, log, _ = self.procs[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{name} does not listen on {port} after {timeout} s:\n{log.read_text()[-3000:]}")

    def wait_for_log(self, name: str, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log(name):
            if time.monotonic() >= deadline:
                raise AssertionError(f"{text!r} not in the {name} log after {timeout} s:\n{self.diagnose(name)}")
            time.sleep(0.1)

    def diagnose(self, name: str) -> str:
        """What a stuck child is doing: its threads' stacks (faulthandler), and database lock waits."""
        proc, _log, _group = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGABRT)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        waits = ""
        try:
            from django.db import connection

            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pid, state, wait_event_type, wait_event, left(query, 200) "
                                   "FROM pg_stat_activity WHERE datname = current_database()")
                    waits = "\n".join(map(str, cursor.fetchall()))
        except Exception as exc:  # diagnostics only
            waits = f"(no pg_stat_activity: {exc})"
        return f"{self.log(name)[-6000:]}\n--- database sessions ---\n{waits}"

    def _signal(self, proc: subprocess.Popen, group: bool, sig: int) -> None:
        try:
            if group:
                os.killpg(proc.pid, sig)  # the whole group, even when its leader has exited
            elif proc.poll() is None:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass

    def stop_all(self) -> None:
        for proc, _log, group in self.procs.values():
            self._signal(proc, group, signal.SIGTERM)
        for name, (proc, log, group) in self.procs.items():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._signal(proc, group, signal.SIGKILL)
                proc.wait()
            print(f"--- {name} log (tail) ---\n{log.read_text(errors='replace')[-4000:]}")


@contextmanager
def processes(log_dir: Path, env: dict[str, str] | None = None, *, inherit: bool = True):
    procs = Processes(log_dir, env, inherit=inherit)
    try:
        yield procs
    finally:
        procs.stop_all()


@contextmanager
def chromium(monkeypatch):
    """Headless Debian chromium (never a downloaded browser)."""
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread, which Django's async-safety check
    # mistakes for async code; the test's own database calls are plain synchronous ones.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
