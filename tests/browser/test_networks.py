"""Networks in a real browser, on libvirt's test driver (no real guest): the create form's network
choice and user-data warning, and the VM page's Network panel following what the workers and the
monitor write (NIC jobs, DHCP addresses) without a reload, over the websocket and by polling."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from portal.choices import JobStatus, Via
from portal.models import Job
from vms.choices import VMStatus
from vms.models import VM, VMNic
from vms.services import vm_create

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1280, "height": 900}


def _page(browser, live_portal, *, websocket: bool = True):
    context = browser.new_context(base_url=live_portal, viewport=DESKTOP)
    if not websocket:
        context.add_init_script("window.WebSocket = undefined;")
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.goto("/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("pw-alice")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(live_portal + "/")
    return page, problems


def test_the_create_form_ticks_the_default_network_and_limits_the_choice(
        live_portal, browser, transactional_db, test_host, make_network, alice, screenshot_dir):
    make_network("lab", "10.77.0.0/24", is_public=True, is_default=True, title="Lab",
                 description="Everyone's scratch network")
    for i in range(1, 5):
        make_network(f"net{i}", f"10.8{i}.0.0/24", is_public=True, mode="nat")
    page, problems = _page(browser, live_portal)
    page.goto("/vms/new/")

    lab = page.get_by_role("checkbox", name="lab")
    expect(lab).to_be_checked()
    for i in (1, 2, 3):
        page.get_by_role("checkbox", name=f"net{i}").check()
    expect(page.get_by_role("checkbox", name="net4")).to_be_disabled()  # 4 NICs at most
    page.get_by_role("checkbox", name="net3").uncheck()
    expect(page.get_by_role("checkbox", name="net4")).to_be_enabled()

    warn = page.locator("[data-user-data-warn]")
    page.locator("summary", has_text="cloud-init user-data").click()
    page.get_by_label("User-data").fill("#cloud-config\npackages: [nginx]\n")
    expect(warn).to_be_visible()  # the test image does not take cloud-init
    page.get_by_label("User-data").fill("")
    expect(warn).to_be_hidden()
    page.screenshot(path=str(screenshot_dir / "create-networks-desktop.png"), full_page=True)

    page.goto("/networks/")
    expect(page.locator("tr[data-network=lab]")).to_contain_text("Default")
    page.screenshot(path=str(screenshot_dir / "networks-desktop.png"), full_page=True)
    assert not problems, problems


@pytest.mark.parametrize("websocket", [True, False], ids=["websocket", "polling"])
def test_the_network_panel_follows_nic_jobs_and_addresses_in_place(
        live_portal, browser, transactional_db, test_host, make_network, alice, screenshot_dir, websocket):
    lab = make_network("lab", "10.77.0.0/24", is_public=True, is_default=True, title="Lab")
    vm = vm_create(actor=alice, via=Via.API, name="web-1", vcpus=1, memory_mib=128, disk_gib=1).vm
    nic = VMNic.objects.get(vm=vm)
    page, problems = _page(browser, live_portal, websocket=websocket)

    page.goto(f"/vms/{vm.pk}/")
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live" if websocket else "polling")
    panel = page.locator("[data-nics-panel]")
    row = panel.locator(f"tr[data-nic='{nic.mac}']")
    expect(row).to_contain_text("Waiting for a DHCP lease…")
    expect(row).to_contain_text("lab")

    # What the monitor writes when the guest took a lease.
    VMNic.objects.filter(pk=nic.pk).update(ip_address="10.77.0.23")
    expect(row).to_contain_text("10.77.0.23", timeout=10_000)
    expect(page.locator("[data-vm-address]")).to_have_text("10.77.0.23")

    # What the service and the worker write while a second NIC is added.
    added = VMNic.objects.create(vm=vm, network=lab, mac="52:54:00:00:be:ef", status=VMNic.Status.ATTACHING)
    job = Job.objects.create(kind="vm.nic.add", status=JobStatus.RUNNING, progress=50, actor=alice, via=Via.WEB,
                             step="Attaching the NIC", target_type="vm", target_id=str(vm.pk), target_name=vm.name)
    new_row = panel.locator("tr[data-nic='52:54:00:00:be:ef']")
    expect(new_row).to_contain_text("Attaching…", timeout=10_000)
    expect(page.locator("[data-nic-action=add]")).to_be_disabled()
    VMNic.objects.filter(pk=added.pk).update(status=VMNic.Status.ATTACHED)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED, progress=100, step="Done")
    expect(new_row).to_contain_text("Attached", timeout=10_000)
    expect(page.locator("[data-nic-action=add]")).to_be_enabled()
    if websocket:
        page.locator("#network").screenshot(path=str(screenshot_dir / "network-panel-desktop.png"))

    # The VM stops (what reconcile writes): both server-rendered panels are fetched again.
    VMNic.objects.filter(vm=vm).update(ip_address=None)
    VM.objects.filter(pk=vm.pk).update(status=VMStatus.STOPPED, power_state="shutoff")
    expect(page.locator("[data-snapshots-panel]")).to_have_attribute("data-vm-status", "stopped", timeout=10_000)
    expect(panel).to_have_attribute("data-vm-status", "stopped", timeout=10_000)
    expect(row.locator("[data-nic-address]")).to_have_text("—")
    expect(page.locator("[data-vm-address]")).to_have_text("—")
    assert page.evaluate("window.__sameDocument") is True
    assert not problems, problems
