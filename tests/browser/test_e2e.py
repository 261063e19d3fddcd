"""End to end in a real browser: sign in, create a real VM, watch it run, stop it, delete it.

Headless Debian chromium drives the portal served by daphne with a real job worker; the VM is the
tiny Linux guest on qemu:///system, checked through libvirt at each step. Screenshots of the main
pages at desktop and phone widths are written to var/screenshots/, or to docs/screenshots/ by
`make screenshots` (PORTAL_SCREENSHOTS=1), so a test run leaves the work tree clean.
"""

from __future__ import annotations

import re
import time

import pytest
from django.conf import settings
from playwright.sync_api import Page, expect

from portal.choices import Via
from portal.hypervisor import PowerState, get_driver
from vms.choices import VMStatus
from vms.models import VM, Flavor
from vms.services import vm_create

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
BOOT_MARKER = b"PORTAL GUEST READY"


def _shoot(page: Page, directory, name: str) -> None:
    page.wait_for_timeout(150)  # let transitions settle
    page.screenshot(path=str(directory / f"{name}.png"), full_page=True)


def _wait_for_guest_shell(uri: str, uuid: str, timeout: float = 120) -> None:
    """Wait until the guest has booted (ACPI only works once its kernel handles the power button)."""
    console = get_driver(uri).open_console(uuid)
    try:
        deadline = time.monotonic() + timeout
        seen = b""
        while time.monotonic() < deadline:
            console.write(b"\necho portal-e2e-$((6*7))\n")
            chunk_deadline = time.monotonic() + 3
            while time.monotonic() < chunk_deadline:
                data = console.read(timeout=0.3)
                if data is None:
                    raise AssertionError(f"console closed; got {seen[-400:]!r}")
                seen += data
                if BOOT_MARKER in seen or b"portal-e2e-42" in seen:
                    return
        raise AssertionError(f"guest did not boot within {timeout} s; console: {seen[-600:]!r}")
    finally:
        console.close()


def _phone_shots(browser, base_url: str, state, directory, pages: dict[str, str]) -> None:
    context = browser.new_context(base_url=base_url, viewport=PHONE, storage_state=state, device_scale_factor=2,
                                  is_mobile=True, has_touch=True)
    page = context.new_page()
    for name, url in pages.items():
        page.goto(url)
        _shoot(page, directory, f"{name}-phone")
    context.close()


def test_create_watch_stop_and_delete_a_real_vm_in_the_browser(
        live_portal, browser, guest_image, qemu_host, alice, screenshot_dir):
    for name, vcpus, mem, disk, desc in (("tiny", 1, 128, 1, "Smallest useful VM"),
                                         ("small", 1, 256, 2, "Light services"),
                                         ("medium", 2, 512, 4, "Builds and tests"),
                                         ("large", 2, 1024, 8, "Heavier workloads")):
        Flavor.objects.create(name=name, vcpus=vcpus, memory_mib=mem, disk_gib=disk, description=desc)
    # A second, stopped VM, made through the API door, so the list shows more than one state.
    vm_create(actor=alice, via=Via.API, name="db-1", image=guest_image, flavor="tiny",
              description="Scratch database", start=False)
    driver = get_driver(qemu_host.uri)

    context = browser.new_context(base_url=live_portal, viewport=DESKTOP)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
            if msg.type == "error" else None)

    # --- sign in --------------------------------------------------------------------------------
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))
    _shoot(page, screenshot_dir, "login-desktop")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("pw-alice")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(live_portal + "/")
    expect(page.get_by_role("heading", name="My VMs")).to_be_visible()
    expect(page.locator("tr", has_text="db-1")).to_contain_text("Stopped")

    # --- create -----------------------------------------------------------------------------------
    page.get_by_role("link", name="Create VM").first.click()
    expect(page.get_by_role("heading", name="Create VM")).to_be_visible()
    page.wait_for_load_state("load")  # forms.js listens before typing starts (a loaded host ran it late)
    name_input = page.get_by_label("Name")
    name_input.fill("Web<1>")  # live validation, before the server sees anything
    expect(page.locator("#name-error")).to_contain_text("Invalid name")
    name_input.fill("e2e-web")
    expect(page.locator("#name-error")).to_be_hidden()
    page.get_by_role("radio", name=re.compile(r"^small ")).check()
    page.get_by_role("radio", name=re.compile(r"^Tiny Linux guest")).check()
    page.get_by_label("Description").fill("Created by the browser test")
    expect(page.locator("[data-quota-check]")).to_contain_text("fits your remaining quota")
    _shoot(page, screenshot_dir, "create-desktop")
    page.get_by_role("button", name="Create VM").click()

    # --- it runs: the page updates itself --------------------------------------------------------
    expect(page).to_have_url(re.compile(r"/vms/\d+/$"))
    vm = VM.objects.get(owner=alice, name="e2e-web")
    page.evaluate("window.__sameDocument = true")
    badge = page.locator("[data-vm-detail] h1 [data-vm-badge]")
    expect(badge).to_have_text("Running", timeout=90_000)
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded instead of updating in place"
    expect(page.locator("[data-vm-detail] button[data-action=stop]")).to_be_enabled()
    expect(page.locator("[data-vm-detail] button[data-action=start]")).to_be_disabled()
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
    assert driver.domain_info(str(vm.uuid)).state == PowerState.RUNNING
    expect(page.locator("[data-vm-jobs] tr", has_text="Create")).to_contain_text("Succeeded")
    _wait_for_guest_shell(qemu_host.uri, str(vm.uuid))

    # --- a snapshot with the guest's memory: its row turns ready by itself ------------------------
    page.locator("#id_snapshot_name").fill("before-upgrade")
    page.get_by_role("button", name="Take snapshot").click()
    expect(page.locator(".message", has_text="Taking snapshot before-upgrade of e2e-web.")).to_be_visible()
    snapshot_row = page.locator("[data-snapshots-panel] tr[data-snapshot=before-upgrade]")
    expect(snapshot_row).to_contain_text("Disks and memory", timeout=30_000)
    expect(snapshot_row.get_by_role("button", name="Revert")).to_be_enabled()
    taken = driver.list_snapshots(str(vm.uuid))
    assert [(s.name, s.has_memory) for s in taken] == [("before-upgrade", True)]

    page.goto(f"/vms/{vm.pk}/")  # the activity list (audit events) is rendered by the server; top of the page
    _shoot(page, screenshot_dir, "detail-desktop")

    page.goto("/")
    row = page.locator("tr", has_text="e2e-web")
    expect(row).to_contain_text("Running")
    expect(row).to_contain_text("1 vCPU · 256 MiB · 2 GiB")
    _shoot(page, screenshot_dir, "list-desktop")
    dark = browser.new_context(base_url=live_portal, viewport=DESKTOP, color_scheme="dark",
                               storage_state=context.storage_state())
    dark_page = dark.new_page()
    dark_page.goto("/")
    _shoot(dark_page, screenshot_dir, "list-dark-desktop")
    dark_page.goto(f"/vms/{vm.pk}/")
    _shoot(dark_page, screenshot_dir, "detail-dark-desktop")
    dark.close()
    _phone_shots(browser, live_portal, context.storage_state(), screenshot_dir,
                 {"list": "/", "create": "/vms/new/", "detail": f"/vms/{vm.pk}/"})

    # --- Stop (ACPI) ------------------------------------------------------------------------------
    row.get_by_role("link", name="e2e-web").click()
    page.locator("[data-vm-detail] button[data-action=stop]").click()
    expect(page.locator(".message", has_text="Stopping e2e-web.")).to_be_visible()
    page.evaluate("window.__sameDocument = true")
    expect(badge).to_have_text("Stopped", timeout=60_000)
    assert page.evaluate("window.__sameDocument") is True
    expect(page.locator("[data-vm-detail] button[data-action=start]")).to_be_enabled()
    assert driver.domain_info(str(vm.uuid)).state == PowerState.SHUTOFF
    expect(page.locator("[data-vm-jobs] tr", has_text="Stop").first).to_contain_text("Succeeded")

    # --- Delete, typing the name -------------------------------------------------------------------
    volumes = [v.name for v in vm.volumes.all()]
    assert volumes and all(any(v == i.name for i in driver.list_volumes(pool=settings.STORAGE_POOL))
                           for v in volumes)
    page.locator(".toolbar a[data-action=delete]").click()
    dialog = page.locator("#delete-dialog")
    expect(dialog).to_be_visible()
    confirm = dialog.get_by_role("button", name="Delete VM")
    expect(confirm).to_be_disabled()
    dialog.get_by_label("Type e2e-web to confirm").fill("e2e-we")
    expect(confirm).to_be_disabled()
    dialog.get_by_label("Type e2e-web to confirm").fill("e2e-web")
    confirm.click()
    expect(page).to_have_url(live_portal + "/")
    expect(page.locator(".message", has_text="Deleting e2e-web.")).to_be_visible()
    expect(page.locator("tr", has_text="e2e-web")).to_have_count(0, timeout=60_000)

    deadline = time.monotonic() + 30
    while VM.objects.get(pk=vm.pk).status != VMStatus.DELETED and time.monotonic() < deadline:
        time.sleep(0.3)
    assert VM.objects.get(pk=vm.pk).status == VMStatus.DELETED
    assert not driver.domain_exists(str(vm.uuid))
    left = {v.name for v in driver.list_volumes(pool=settings.STORAGE_POOL)}
    assert not left & set(volumes), f"disks left behind: {left & set(volumes)}"
    expect(page.locator("tr", has_text="db-1")).to_contain_text("Stopped")

    assert not problems, problems
    context.close()
