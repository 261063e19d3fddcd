"""Live updates in a real browser without a websocket: pages fall back to polling /vms/status.json.

Runs on libvirt's test driver (no real guest): the changes a worker would write are written to
the database by the test, and the page must show them in place, without reloading.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from portal.choices import JobStatus, Via
from portal.models import Job
from vms.choices import VMStatus
from vms.models import VM
from vms.services import vm_create

pytestmark = pytest.mark.browser


def _sign_in(page, base_url: str) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("pw-alice")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(base_url + "/")


def test_pages_follow_state_and_job_progress_by_polling_when_websockets_are_unavailable(
        live_portal, browser, transactional_db, test_host, alice):
    vm = vm_create(actor=alice, via=Via.API, name="web-1", vcpus=1, memory_mib=128, disk_gib=1).vm
    assert VM.objects.get(pk=vm.pk).status == VMStatus.RUNNING

    context = browser.new_context(base_url=live_portal, viewport={"width": 1280, "height": 860})
    context.add_init_script("window.WebSocket = undefined;")
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    _sign_in(page, live_portal)

    page.goto(f"/vms/{vm.pk}/")
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "polling")
    badge = page.locator("[data-vm-detail] h1 [data-vm-badge]")
    expect(badge).to_have_text("Running")
    banner = page.locator("[data-vm-active-job]")
    expect(banner).to_be_hidden()

    # What the worker writes while it stops the VM.
    job = Job.objects.create(kind="vm.stop", status=JobStatus.RUNNING, progress=35, actor=alice, via=Via.WEB,
                             step="Waiting for the guest to power off (6 s)", target_type="vm",
                             target_id=str(vm.pk), target_name=vm.name)
    VM.objects.filter(pk=vm.pk).update(status=VMStatus.STOPPING)
    expect(badge).to_have_text("Stopping", timeout=10_000)
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Waiting for the guest to power off (6 s)")
    expect(banner.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "35")
    expect(page.locator(f"[data-vm-jobs] tr[data-job-id='{job.pk}']")).to_contain_text("Running")
    expect(page.locator("[data-vm-detail] button[data-action=stop]")).to_be_disabled()
    expect(page.locator("[data-vm-detail] button[data-action=force_off]")).to_be_enabled()

    Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED, progress=100, step="Done")
    VM.objects.filter(pk=vm.pk).update(status=VMStatus.STOPPED, power_state="shutoff")
    expect(badge).to_have_text("Stopped", timeout=10_000)
    expect(banner).to_be_hidden()
    expect(page.locator(f"[data-vm-jobs] tr[data-job-id='{job.pk}']")).to_contain_text("Succeeded")
    expect(page.locator("[data-vm-detail] button[data-action=start]")).to_be_enabled()
    expect(page.locator("[data-vm-power]")).to_have_text("shutoff")
    expect(page.locator("[data-console-hint]")).to_be_visible()
    assert page.evaluate("window.__sameDocument") is True

    # A VM deleted elsewhere leaves the list by itself.
    page.goto("/")
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("tr", has_text="web-1")).to_contain_text("Stopped")
    VM.objects.filter(pk=vm.pk).update(status=VMStatus.DELETED)
    expect(page.locator("tr", has_text="web-1")).to_have_count(0, timeout=10_000)
    assert page.evaluate("window.__sameDocument") is True
    assert not problems, problems
    context.close()
