"""The VM page's CD-ROM panel in a real browser, on libvirt's test driver: eject (through the
confirmation dialog) and insert by its forms, and the panel following a media change that a worker
writes, in place."""

from __future__ import annotations

import tempfile

import pytest
from playwright.sync_api import expect

from portal.choices import JobStatus, Via
from portal.models import Job
from storage.models import Image
from storage.services import image_register
from vms.models import VM
from vms.services import vm_create

pytestmark = pytest.mark.browser


def test_the_cdrom_panel_ejects_inserts_and_follows_media_jobs(
        live_portal, browser, transactional_db, test_host, alice, screenshot_dir):
    with tempfile.NamedTemporaryFile(suffix=".iso") as fh:
        fh.write(bytes(32769) + b"CD001" + bytes(32762))  # an ISO 9660 volume descriptor's magic
        fh.flush()
        iso = image_register(actor=None, host=test_host, name="netinst", title="Debian netinst",
                             source_path=fh.name, fmt="iso", replace=True)
    Image.objects.filter(pk=iso.pk).update(kind=Image.Kind.ISO)
    vm = vm_create(actor=alice, via=Via.API, name="inst-1", image="netinst", vcpus=1, memory_mib=128,
                   disk_gib=1, start=False).vm
    context = browser.new_context(base_url=live_portal, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.goto("/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("pw-alice")
    page.get_by_role("button", name="Sign in").click()

    page.goto(f"/vms/{vm.pk}/#cdrom")
    panel = page.locator("[data-cdrom-panel]")
    expect(panel.locator("[data-cdrom-media]")).to_contain_text("Debian netinst")
    expect(panel).to_contain_text("CD first, then disk")
    panel.locator("[data-cdrom-action=eject]").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text("Eject netinst from inst-1?")
    dialog.get_by_role("button", name="Eject").click()
    expect(page.locator("body")).to_contain_text("Ejecting netinst from inst-1.")
    expect(panel.locator("[data-cdrom-media]")).to_contain_text("Empty")

    page.get_by_label("ISO image").select_option("netinst")
    panel.locator("[data-cdrom-action=insert]").click()
    expect(page.locator("body")).to_contain_text("Inserting netinst into inst-1.")
    expect(panel.locator("[data-cdrom-media]")).to_contain_text("Debian netinst")
    page.locator("#cdrom").screenshot(path=str(screenshot_dir / "cdrom-panel-desktop.png"))

    # What a worker writes while the CD is ejected through another door: the panel follows in place.
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("[data-cdrom-action=insert]")).to_be_enabled(timeout=10_000)  # its job ended
    VM.objects.filter(pk=vm.pk).update(cdrom=None)
    job = Job.objects.create(kind="vm.cdrom.eject", status=JobStatus.RUNNING, progress=30, actor=alice,
                             via=Via.API, step="Ejecting the CD", target_type="vm", target_id=str(vm.pk),
                             target_name=vm.name)
    expect(panel.locator("[data-cdrom-media]")).to_contain_text("Empty", timeout=10_000)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED, progress=100, step="Done")
    expect(page.locator("[data-cdrom-action=insert]")).to_be_enabled(timeout=10_000)
    assert page.evaluate("window.__sameDocument") is True
    assert not problems, problems
