"""Browser tests: Debian chromium (Playwright) against daphne, the console proxy and a real guest.

One booted guest serves every check: the noVNC canvas shows the same pixels as libvirt's own
screenshot of the guest; keys typed into noVNC (and text pasted) reach the guest, seen on its
serial console through libvirt; the xterm.js terminal runs `uname -a`; and the screen works once
more through the websockify tier.
"""

from __future__ import annotations

import base64
import json
import time

import pytest

from tests.support import DAPHNE, MANAGE, free_port, processes, screenshot_dir
from tests.support import chromium as launch_chromium

pytestmark = [pytest.mark.browser, pytest.mark.qemu, pytest.mark.django_db(transaction=True)]



@pytest.fixture
def console_db(transactional_db, django_db_blocker, tmp_path):
    """The test database as the child processes should open it (a file when the suite runs on SQLite)."""
    from django.core.management import call_command
    from django.db import connections

    conn = connections["default"]
    if conn.vendor != "sqlite":
        yield dict(conn.settings_dict)
        return
    # An in-memory SQLite database cannot be shared with another process: use a migrated file for
    # this test, keeping the in-memory connection aside (closing it would destroy it).
    # Playwright's sync API runs an event loop in this thread, and Django then keeps connections per
    # context, not per thread: point the settings at the file too, for connections made there.
    with django_db_blocker.unblock():
        saved_settings, saved_connection = conn.settings_dict, conn.connection
        conn.connection = None
        conn.settings_dict = {**saved_settings, "NAME": str(tmp_path / "consoles.sqlite3")}
        connections.settings["default"] = conn.settings_dict
        call_command("migrate", verbosity=0, interactive=False)
    try:
        yield dict(conn.settings_dict)
    finally:
        with django_db_blocker.unblock():
            for other in connections.all(initialized_only=True):
                other.close()
            conn.close()
            connections.settings["default"] = saved_settings
            conn.settings_dict, conn.connection = saved_settings, saved_connection


@pytest.fixture
def consoles_live(console_db, tmp_path):
    """daphne (the portal) and `manage.py console_proxy` (websockify tier); yields (portal URL, proxy URL)."""
    port, proxy_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"DJANGO_SETTINGS_MODULE": "tests.consoles.live_settings",
           "PORTAL_CONSOLE_TEST_DB": json.dumps(console_db, default=str),
           "PORTAL_CONSOLE_PROXY_URL": f"ws://127.0.0.1:{proxy_port}",
           "PORTAL_CONSOLE_ALLOWED_ORIGINS": base, "PORTAL_CONSOLE_POLL_SECONDS": "2"}
    with processes(tmp_path, env) as procs:
        procs.start("daphne", [*DAPHNE, "-p", str(port), "portal.asgi:application"], port=port)
        procs.start("proxy", [*MANAGE, "console_proxy", "--listen", f"127.0.0.1:{proxy_port}"], port=proxy_port)
        yield base, f"ws://127.0.0.1:{proxy_port}"


@pytest.fixture
def chromium(monkeypatch):
    with launch_chromium(monkeypatch) as browser:
        yield browser


@pytest.fixture
def playwright_db_connections(chromium):
    """Close the connections the test body opened while Playwright's loop ran (kept per context then)."""
    yield
    from django.db import connections

    connections.close_all()


# Compare noVNC's canvas with a PNG of libvirt's screenshot, decoded by the browser itself.
COMPARE_JS = """async (png) => {
  const canvas = document.querySelector('[data-screen] canvas');
  const w = canvas.width, h = canvas.height;
  const mine = canvas.getContext('2d').getImageData(0, 0, w, h).data;
  // Decoded without fetch(): the page's Content-Security-Policy allows no data: connections.
  const blob = new Blob([Uint8Array.from(atob(png), (c) => c.charCodeAt(0))], {type: 'image/png'});
  const bitmap = await createImageBitmap(blob);
  const off = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = off.getContext('2d');
  ctx.drawImage(bitmap, 0, 0);
  const theirs = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  let differ = 0, lit = 0;
  const colours = new Set();
  for (let i = 0; i < mine.length; i += 4) {
    const d = Math.abs(mine[i] - theirs[i]) + Math.abs(mine[i+1] - theirs[i+1]) + Math.abs(mine[i+2] - theirs[i+2]);
    if (d > 48) differ++;
    if (mine[i] + mine[i+1] + mine[i+2] > 300) lit++;
    if (colours.size < 64) colours.add((mine[i] << 16) | (mine[i+1] << 8) | mine[i+2]);
  }
  return {w, h, pw: bitmap.width, ph: bitmap.height, differ: differ / (w * h), lit: lit / (w * h),
          colours: colours.size};
}"""


SHIFTED = {">": "Period", "$": "Digit4", "(": "Digit9", ")": "Digit0", "*": "Digit8", "|": "Backslash"}


def type_keys(page, text: str) -> None:
    """Type like a person on a US keyboard: Shift held for capitals and shifted symbols.

    (Playwright's keyboard.type sends "S" without Shift; noVNC passes QEMU the key's scancode, so
    the guest would see "s".)
    """
    for ch in text:
        if ch == "\n":
            page.keyboard.press("Enter")
        elif ch.isupper() or ch in SHIFTED:
            page.keyboard.press(f"Shift+{SHIFTED.get(ch, 'Key' + ch.upper())}")
        else:
            page.keyboard.type(ch)


def _canvas_matches_guest(page, driver, uuid: str) -> dict:
    """Poll until noVNC shows what libvirt's screenshot shows (the cursor blinks: allow a little)."""
    last = None
    for _ in range(20):
        png = base64.b64encode(driver.screenshot(uuid)).decode()
        last = page.evaluate(COMPARE_JS, png)
        if (last["w"], last["h"]) == (last["pw"], last["ph"]) and last["differ"] < 0.01 and last["lit"] > 0.002:
            return last
        time.sleep(0.5)
    raise AssertionError(f"the noVNC canvas does not match the guest's screenshot: {last}")


def test_consoles_in_chromium_on_a_real_guest(console_db, guest_image, alice, consoles_live, chromium,
                                              playwright_db_connections):
    from django.test import Client

    from portal.hypervisor import get_driver
    from vms.services import vm_create

    base, proxy = consoles_live
    vm = vm_create(actor=alice, via="web", name="browser-guest", image=guest_image, vcpus=1, memory_mib=128,
                   disk_gib=1).vm
    vm.refresh_from_db()
    assert vm.status == "running", vm.last_error
    driver = get_driver(vm.host.uri)
    uuid = str(vm.uuid)
    serial = driver.open_console(uuid)  # the test watches the serial line directly through libvirt
    serial.read_until(b"PORTAL GUEST READY", timeout=120)

    client = Client()
    client.force_login(alice)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": base}])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # The Content-Security-Policy lets noVNC and xterm.js work (a refusal is a console error).
    page.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)

    # 1. The screen through the portal's own origin (Channels).
    page.goto(f"{base}/consoles/vm/{vm.pk}/screen/?tier=portal")
    page.wait_for_function("() => window.portalConsole && window.portalConsole.state === 'connected'", timeout=30000)
    assert page.evaluate("window.portalConsole.tier") == "channels"
    status = page.locator("[data-status]")
    assert status.get_attribute("data-state") == "connected"
    assert page.locator("[data-status-text]").inner_text().startswith("Connected")
    result = _canvas_matches_guest(page, driver, uuid)
    assert result["colours"] > 1  # not a blank canvas
    shots = screenshot_dir()  # var/screenshots/, or docs/screenshots/ under `make screenshots`
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "console-screen.png"))

    # 2. Keys typed into noVNC reach the guest's tty1 shell, which echoes to the serial line.
    page.locator("[data-screen] canvas").click()
    type_keys(page, "echo novnc-key-42 > /dev/ttyS0\n")
    serial.read_until(b"novnc-key-42", timeout=20)

    # 3. Pasted text is typed into the guest too (shifted characters included).
    page.fill("[data-paste-text]", "echo Pasted-$((6*7)) > /dev/ttyS0\n")
    page.click("[data-paste-send]")
    serial.read_until(b"Pasted-42", timeout=20)
    serial.close()

    # 4. The terminal: xterm.js over the serial console, `uname -a` and its answer.
    page.goto(f"{base}/consoles/vm/{vm.pk}/terminal/")
    page.wait_for_function("() => window.portalTerminal && window.portalTerminal.state === 'connected'", timeout=30000)
    page.locator("[data-terminal]").click()
    page.keyboard.type("uname -a")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('.xterm-rows').innerText.includes('Linux browser-guest')",
                           timeout=20000)
    assert "x86_64" in page.locator(".xterm-rows").inner_text()
    page.screenshot(path=str(shots / "console-terminal.png"))

    # 5. The screen once more, through the websockify tier (the page's default when it is configured).
    page.goto(f"{base}/consoles/vm/{vm.pk}/screen/")
    page.wait_for_function("() => window.portalConsole && window.portalConsole.state === 'connected'", timeout=30000)
    assert page.evaluate("window.portalConsole.tier") == "websockify"
    assert "console proxy" in page.locator("[data-status-text]").inner_text()
    _canvas_matches_guest(page, driver, uuid)
    serial = driver.open_console(uuid)
    page.locator("[data-screen] canvas").click()
    type_keys(page, "echo via-proxy-7 > /dev/ttyS0\n")
    serial.read_until(b"via-proxy-7", timeout=20)
    serial.close()

    # 6. The VM stops: the page says so, with the relay's reason.
    from vms.services import vm_force_off

    vm_force_off(actor=alice, via="web", vm=vm)
    page.wait_for_function("() => window.portalConsole.state === 'closed'", timeout=30000)
    assert page.evaluate("window.portalConsole.lastClose.code") == 4410
    assert "stopped" in page.locator("[data-status-text]").inner_text()
    assert page.locator("[data-action=reconnect]").is_visible()
    assert not errors, errors
    context.close()

    from consoles.models import ConsoleSession

    tiers = set(ConsoleSession.objects.filter(vm=vm).values_list("tier", flat=True))
    assert tiers == {"channels", "websockify"}
