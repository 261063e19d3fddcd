"""Fixtures for browser tests: a real portal (daphne + a job worker) on a file-backed test database,
and headless Debian chromium driven by Playwright.

The test process and the portal processes share the test database (`portal_db`), so fixtures such
as `qemu_host` and `guest_image` write rows the portal serves; tests that use it need
`transactional_db` (qemu_host brings it) so their rows are committed. Subprocesses inherit PORTAL_TEST_INSTANCE_ID, so the domains they create are cleaned up
with the rest of the run's.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support import DAPHNE, MANAGE, chromium, free_port, processes
from tests.support import screenshot_dir as choose_screenshot_dir


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
    port = free_port()
    with processes(tmp_path, {**portal_db, "DJANGO_SETTINGS_MODULE": "tests.browser.settings"}) as procs:
        procs.start("daphne", [*DAPHNE, "-p", str(port), "portal.asgi:application"], port=port)
        procs.start("worker", [*MANAGE, "db_worker", "--no-startup-delay", "--no-reload", "--interval", "0.3"])
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def browser(monkeypatch):
    """Headless Debian chromium (no `playwright install`)."""
    with chromium(monkeypatch) as browser:
        yield browser


@pytest.fixture
def screenshot_dir() -> Path:
    """var/screenshots/ (ignored by git); docs/screenshots/ under `make screenshots` (PORTAL_SCREENSHOTS=1)."""
    directory = choose_screenshot_dir()
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(autouse=True)
def _no_group_messages(monkeypatch):
    """Services called by the test process publish to its own in-memory channel layer, which cannot
    reach the portal processes (they poll the database instead); skip it, as async_to_sync would
    also trip over the event loop Playwright keeps in this thread."""
    monkeypatch.setattr("portal.events._send", lambda groups, message: None)
