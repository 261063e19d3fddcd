"""The image library in a real browser (Debian's chromium, a real portal: daphne + a job worker, on
libvirt's test driver): a qcow2 made with qemu-img is uploaded through the page with tus-js-client in
small chunks; one PATCH's answer is lost on the way back (the bytes reached the portal), and the upload
resumes where the portal says it stopped instead of starting again; the import job's progress shows in
place and the image appears in the table. A second upload is cancelled half-way: the portal removes it."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest
from playwright.sync_api import expect

from portal.models import Job
from storage.models import Image, Upload

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1280, "height": 900}
CHUNK = 256 * 1024


@pytest.fixture
def staging(monkeypatch, tmp_path):
    """The portal processes stage uploads in this test's own directory (they inherit the environment)."""
    path = tmp_path / "staging"
    monkeypatch.setenv("PORTAL_IMAGE_STAGING_DIR", str(path))
    return path


@pytest.fixture
def portal(staging, live_portal):
    return live_portal


def _qcow2(tmp_path, name: str, mib: int):
    """A qcow2 made with qemu-img from random data (so it is `mib` MiB of real clusters, many chunks)."""
    raw = tmp_path / f"{name}.raw"
    raw.write_bytes(os.urandom(mib * 1024 * 1024))
    out = tmp_path / f"{name}.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(out)], check=True)
    raw.unlink()
    return out


def _page(browser, base_url):
    context = browser.new_context(base_url=base_url, viewport=DESKTOP)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.goto("/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("pw-alice")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(base_url + "/")
    return page, problems


def test_an_upload_resumes_after_a_lost_chunk_and_the_image_is_listed_and_a_cancel_removes_it(
        portal, browser, transactional_db, test_host, alice, tmp_path, staging, screenshot_dir):
    disk = _qcow2(tmp_path, "tiny-disk", 1)
    data = disk.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    assert len(data) > 3 * CHUNK

    page, problems = _page(browser, portal)
    page.goto("/images/")
    expect(page.get_by_role("link", name="Images", exact=True)).to_have_attribute("aria-current", "page")
    form = page.locator("[data-upload-form]")
    form.evaluate(f"f => f.dataset.chunkBytes = '{CHUNK}'")  # the portal's chunk size, small for the test

    # Every tus request, in order; the second PATCH reaches the portal but its answer is lost.
    seen: list[tuple[str, int | None]] = []
    lost = {"done": False}

    def tus_route(route):
        request = route.request
        offset = request.headers.get("upload-offset")
        seen.append((request.method, int(offset) if offset is not None else None))
        patches = [o for m, o in seen if m == "PATCH"]
        if request.method == "PATCH" and len(patches) == 2 and not lost["done"]:
            lost["done"] = True
            answer = route.fetch()  # the bytes arrive; the browser never hears back
            seen.append(("PATCH-answer-lost", int(answer.headers["upload-offset"])))
            route.abort("connectionreset")
            return
        route.continue_()

    page.route("**/api/uploads/**", tus_route)
    page.set_input_files("#upload-file", str(disk))
    expect(page.locator("#upload-name")).to_have_value("tiny-disk")  # suggested from the file name
    page.locator("#upload-name").fill("web-upload")
    page.locator("#upload-title").fill("Uploaded from the browser")
    page.locator("#upload-sha256").fill(sha)  # the import checks the received bytes against it
    page.get_by_role("button", name="Upload and import").click()

    done = page.locator("[data-upload-form] [data-import-done]")
    expect(done).to_contain_text("Imported web-upload", timeout=90_000)
    expect(page.locator("[data-upload-form] [data-job-badge]")).to_contain_text("Succeeded")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(screenshot_dir / "images-upload-desktop.png"), full_page=True)

    # Resumed, not restarted: after the lost answer the client asked where the portal stood (HEAD) and
    # carried on from there; no byte range was sent twice and nothing started again from 0.
    methods = [m for m, _ in seen]
    assert methods[0] == "POST", seen
    lost_at = methods.index("PATCH-answer-lost")
    assert seen[lost_at] == ("PATCH-answer-lost", 2 * CHUNK), seen
    assert "HEAD" in methods[lost_at:], seen
    offsets = [o for m, o in seen if m == "PATCH"]
    assert offsets == list(range(0, len(data), CHUNK)), seen

    image = Image.objects.get(name="web-upload")
    assert (image.owner, image.title, image.source_format, image.visibility) == (
        alice, "Uploaded from the browser", "qcow2", "private")
    assert image.checksum_sha256  # of the stored (converted) file
    job = Job.objects.get(kind="image.import", target_id=str(image.pk))
    assert job.status == "succeeded" and job.params["sha256"] == sha  # the received bytes were the file's
    assert job.result["image_id"] == image.pk
    assert not Upload.objects.filter(status__in=["receiving", "complete"]).exists()

    # The image is in the table (refreshed in place) and on its page, with a link to create a VM from it.
    row = page.locator("tr[data-image=web-upload]")
    expect(row).to_contain_text("Uploaded from the browser")
    expect(row).to_contain_text("qcow2")
    expect(row).to_contain_text(image.checksum_sha256[:12])
    done.get_by_role("link", name="web-upload").click()
    expect(page.locator("h1")).to_contain_text("Uploaded from the browser")
    expect(page.get_by_role("link", name="Create VM from this image")).to_have_attribute(
        "href", f"/vms/new/?image={image.pk}")

    # A second upload, cancelled half-way: its third PATCH is held back so Cancel finds it under way.
    page.unroute("**/api/uploads/**")
    held = []

    def hold_route(route):
        if route.request.method == "PATCH" and int(route.request.headers["upload-offset"]) >= 2 * CHUNK:
            held.append(route)  # never answered: the upload is "in flight" until cancelled
            return
        route.continue_()

    bigger = _qcow2(tmp_path, "second", 2)
    page.goto("/images/")
    page.locator("[data-upload-form]").evaluate(f"f => f.dataset.chunkBytes = '{CHUNK}'")
    page.route("**/api/uploads/**", hold_route)
    page.set_input_files("#upload-file", str(bigger))
    with page.expect_request(lambda r: r.method == "PATCH" and int(r.headers["upload-offset"]) == 2 * CHUNK,
                             timeout=30_000):
        page.get_by_role("button", name="Upload and import").click()
    upload = Upload.objects.get(filename="second.qcow2")
    assert upload.offset == 2 * CHUNK
    assert (staging / "uploads" / str(upload.pk)).exists()
    with page.expect_request(lambda r: r.method == "DELETE" and str(upload.pk) in r.url):
        page.get_by_role("button", name="Cancel upload").click()
    expect(page.locator("[data-upload-status]")).to_have_text("Upload cancelled; nothing was kept.")
    upload.refresh_from_db()
    assert upload.status == "cancelled"
    assert not (staging / "uploads" / str(upload.pk)).exists()
    assert not Image.objects.filter(name="second").exists()
    expect(page.get_by_role("button", name="Upload and import")).to_be_enabled()
    # The fingerprint of the cancelled upload is gone: choosing the file again starts a new upload.
    assert page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('tus::')).length") == 0

    # The API's refusals show next to the field they are about: a name already taken, from the URL form.
    url_form = page.locator("[data-url-form]")
    url_form.get_by_label("URL").fill("http://127.0.0.1:9/disk.qcow2")
    expect(url_form.get_by_label("Name")).to_have_value("disk")  # suggested from the URL
    url_form.get_by_label("Name").fill("web-upload")
    url_form.get_by_role("button", name="Import").click()
    expect(url_form.locator("[data-field-error=name]")).to_contain_text(
        "An image named 'web-upload' exists already; choose another name.")
    expect(url_form.get_by_label("Name")).to_have_attribute("aria-invalid", "true")
    # Accepted, the import runs as a job whose failure shows in place: a user's import may not reach
    # the portal's own network (127.0.0.1 here), and the job says so.
    url_form.get_by_label("Name").fill("from-url")
    url_form.get_by_role("button", name="Import").click()
    expect(url_form.locator("[data-field-error=name]")).to_be_hidden()
    expect(url_form.locator("[data-job-badge]")).to_contain_text("Failed", timeout=60_000)
    expect(url_form.locator("[data-job-error]")).to_contain_text(
        "The URL leads to an address inside the portal's network")

    page.set_viewport_size({"width": 390, "height": 844})  # phone width: the table becomes cards
    page.goto("/images/")
    expect(page.locator("tr[data-image=web-upload]")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(screenshot_dir / "images-phone.png"), full_page=True)
    page.goto(f"/images/{image.pk}/")
    page.screenshot(path=str(screenshot_dir / "image-detail-phone.png"), full_page=True)
    assert not problems, problems


def test_a_reload_mid_upload_resumes_from_the_portals_offset_when_the_same_file_is_chosen(
        portal, browser, transactional_db, test_host, alice, tmp_path, staging):
    disk = _qcow2(tmp_path, "reloaded", 2)
    size = disk.stat().st_size
    page, problems = _page(browser, portal)
    page.goto("/images/")
    page.locator("[data-upload-form]").evaluate(f"f => f.dataset.chunkBytes = '{CHUNK}'")

    def hold_third(route):
        if route.request.method == "PATCH" and int(route.request.headers["upload-offset"]) >= 2 * CHUNK:
            return  # never answered: the tab is reloaded while it is under way
        route.continue_()

    page.route("**/api/uploads/**", hold_third)
    page.set_input_files("#upload-file", str(disk))
    with page.expect_request(lambda r: r.method == "PATCH" and int(r.headers["upload-offset"]) == 2 * CHUNK):
        page.get_by_role("button", name="Upload and import").click()
    upload = Upload.objects.get(filename="reloaded.qcow2")
    assert upload.offset == 2 * CHUNK

    # A reload (the same would be a closed tab, or a browser restart with its localStorage kept).
    page.unroute("**/api/uploads/**")
    page.reload()
    seen: list[tuple[str, str, int | None]] = []

    def record(route):
        offset = route.request.headers.get("upload-offset")
        seen.append((route.request.method, route.request.url, int(offset) if offset is not None else None))
        route.continue_()

    page.route("**/api/uploads/**", record)
    head_offsets: list[int] = []
    page.on("response", lambda r: head_offsets.append(int(r.headers["upload-offset"]))
            if r.request.method == "HEAD" and "/api/uploads/" in r.url else None)
    page.locator("[data-upload-form]").evaluate(f"f => f.dataset.chunkBytes = '{CHUNK}'")
    page.set_input_files("#upload-file", str(disk))  # the same file: its fingerprint finds the upload
    page.locator("#upload-name").fill("reloaded")
    page.get_by_role("button", name="Upload and import").click()
    expect(page.locator("[data-upload-form] [data-import-done]")).to_contain_text("Imported reloaded",
                                                                                timeout=90_000)

    assert "POST" not in [m for m, _, _ in seen], seen  # no new upload was created
    assert seen[0][0] == "HEAD" and str(upload.pk) in seen[0][1], seen
    # On from where the portal stood (two chunks, or three when the held one got through as the page went).
    assert head_offsets and head_offsets[0] >= 2 * CHUNK, head_offsets
    assert [o for m, _, o in seen if m == "PATCH"] == list(range(head_offsets[0], size, CHUNK)), seen
    assert Upload.objects.count() == 1
    upload.refresh_from_db()
    assert upload.status == "done"
    assert Image.objects.get(name="reloaded").owner == alice
    assert not problems, problems
