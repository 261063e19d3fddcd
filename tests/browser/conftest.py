"""Fixtures for browser tests: a real portal (daphne + a job worker) on a file-backed test database,
and headless Debian chromium driven by Playwright.

The test process and the portal processes share the test database (`portal_db`), so fixtures such
as `qemu_host` and `guest_image` write rows the portal serves; tests that use it need
`transactional_db` (qemu_host brings it) so their rows are committed. Subprocesses inherit PORTAL_TEST_INSTANCE_ID, so the domains they create are cleaned up
with the rest of the run's.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

CHROMIUM = os.environ.get("PORTAL_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(settings.BASE_DIR) / "docs" / "screenshots"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"daphne did not listen on {port} within {timeout} s:\n{log.read_text()[-3000:]}")


def _postgres_url(settings_dict: dict) -> str:
    user = quote(settings_dict.get("USER") or "")
    password = quote(settings_dict.get("PASSWORD") or "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or ""
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgresql://{auth}{host}{port}/{quote(settings_dict['NAME'])}"


@pytest.fixture
def portal_db(browser, django_db_setup, django_db_blocker, tmp_path):
    """The environment that makes portal subprocesses use this test's database.

    PostgreSQL: the test database, by name. SQLite: the in-memory test database cannot be shared,
    so the connection is pointed at a migrated file for the duration of the test.
    Requests `browser` first on purpose: Playwright's sync API changes the thread's context, and
    Django's connections are context-local, so the switch must happen in the context the test runs in.
    """
    from django.core.management import call_command
    from django.db import connections

    conn = connections["default"]
    if conn.vendor == "postgresql":
        yield {"PORTAL_DATABASE_URL": _postgres_url(conn.settings_dict)}
        return
    path = tmp_path / "portal.sqlite3"
    with django_db_blocker.unblock():
        saved_settings, saved_connection = conn.settings_dict, conn.connection
        # Closing an in-memory SQLite database would destroy it: keep its connection aside instead.
        conn.connection = None
        conn.settings_dict = {**saved_settings, "NAME": str(path)}
        call_command("migrate", verbosity=0, interactive=False)
    try:
        yield {"PORTAL_DATA_DIR": str(tmp_path), "PORTAL_DATABASE_URL": ""}
    finally:
        with django_db_blocker.unblock():
            conn.close()
            conn.settings_dict, conn.connection = saved_settings, saved_connection


@pytest.fixture
def live_portal(portal_db, tmp_path):
    """The portal served by daphne (HTTP and websockets) with a django-tasks-db worker; yields its URL."""
    port = _free_port()
    env = {**os.environ, **portal_db, "DJANGO_SETTINGS_MODULE": "tests.browser.settings", "PYTHONUNBUFFERED": "1"}
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    commands = {
        "daphne": [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "portal.asgi:application"],
        "worker": [sys.executable, "manage.py", "db_worker", "--no-startup-delay", "--no-reload", "--interval", "0.3"],
    }
    procs: dict[str, tuple[subprocess.Popen, Path]] = {}
    try:
        for name, cmd in commands.items():
            log = tmp_path / f"{name}.log"
            with open(log, "wb") as fh:
                procs[name] = (subprocess.Popen(cmd, cwd=settings.BASE_DIR, env=env, stdout=fh,
                                                stderr=subprocess.STDOUT), log)
        _wait_for_port(port, *procs["daphne"])
        yield f"http://127.0.0.1:{port}"
    finally:
        for proc, _log in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for name, (proc, log) in procs.items():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            # Shown by pytest when the test failed.
            print(f"--- {name} log (tail) ---\n{log.read_text(errors='replace')[-4000:]}")


@pytest.fixture
def browser(monkeypatch):
    """Headless Debian chromium (no `playwright install`)."""
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread, which Django's async-safety check
    # mistakes for async code; the test's own database calls are plain synchronous ones.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture(autouse=True)
def _no_group_messages(monkeypatch):
    """Services called by the test process publish to its own in-memory channel layer, which cannot
    reach the portal processes (they poll the database instead); skip it, as async_to_sync would
    also trip over the event loop Playwright keeps in this thread."""
    monkeypatch.setattr("portal.events._send", lambda groups, message: None)
