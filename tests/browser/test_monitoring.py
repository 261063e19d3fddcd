"""The VM page's Monitoring panel in Chromium (issue #14 part 2): the charts draw the VM's samples
(uPlot canvases), switch range, and take a new sample without a reload. A screenshot goes to
var/screenshots/ (docs/screenshots/ with PORTAL_SCREENSHOTS=1).

On libvirt's test driver (its domains report no counters): the samples are stored by the collector's
own `samples_record` from readings made up here, one interval apart, as a running VM's would be. The
portal processes cannot hear this process's channel layer, so the new sample reaches the page by the
charts' fallback (fetched again every interval, 5 s here); tests/monitoring/test_live.py covers the
websocket push.
"""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from monitoring.collector import samples_record
from portal.choices import Via
from portal.hypervisor import DomainState, DomainStats, PowerState
from vms.services import vm_create

pytestmark = pytest.mark.browser

STEP = 5


@pytest.fixture
def fast_metrics(monkeypatch, settings):
    """The portal processes (started after this fixture) chart 5-second intervals."""
    monkeypatch.setenv("PORTAL_METRICS_INTERVAL_SECONDS", str(STEP))
    settings.METRICS_INTERVAL_SECONDS = STEP
    monkeypatch.setattr("portal.events.publish_each", lambda events: None)
    monkeypatch.setattr("monitoring.collector.publish_each", lambda events: None)


def _reading(vm, i: int) -> list[DomainState]:
    """The i-th reading of a VM with a CPU wave, a steady disk and network, 60 % of its memory in use."""
    cpu_s = sum(STEP * (0.5 + 0.4 * math.sin(k / 6)) for k in range(i))
    stats = DomainStats(domain_id=4, cpu_time_ns=int(cpu_s * 1e9), vcpus=1, balloon_current_kib=262144,
                        balloon_available_kib=262144, balloon_unused_kib=104858, rd_bytes=i * STEP * 800_000,
                        wr_bytes=i * STEP * 300_000, rx_bytes=i * STEP * 120_000, tx_bytes=i * STEP * 40_000)
    return [DomainState(name=vm.domain_name, uuid=str(vm.uuid), state=PowerState.RUNNING, stats=stats)]


def test_the_vm_page_charts_its_samples_and_takes_new_ones(fast_metrics, live_portal, browser, transactional_db,
                                                          test_host, alice, screenshot_dir):
    vm = vm_create(actor=alice, via=Via.API, name="charted", vcpus=1, memory_mib=256, disk_gib=1).vm
    start = timezone.now() - timedelta(seconds=STEP * 120)
    for i in range(121):
        samples_record(host=test_host, domains=_reading(vm, i), now=start + timedelta(seconds=STEP * i))

    context = browser.new_context(base_url=live_portal, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.goto("/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("pw-alice")
    page.get_by_role("button", name="Sign in").click()
    page.goto(f"/vms/{vm.pk}/#monitoring")
    page.evaluate("window.__sameDocument = true")

    panel = page.locator("#monitoring")
    for chart in ("cpu", "memory", "disk", "network"):
        box = panel.locator(f"[data-chart={chart}]")
        expect(box).to_have_attribute("data-points", "120")
        expect(box.locator("canvas")).to_have_count(1)
    # The CPU chart's canvas has drawn pixels (a line, not a blank plot).
    drawn = page.evaluate("""() => {
        const c = document.querySelector('[data-chart=cpu] canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""")
    assert drawn > 500, drawn
    expect(panel.locator("[data-chart=disk]").locator("xpath=..").locator("[data-chart-now]")).to_contain_text("Read")
    page.evaluate("document.querySelector('.site-header').style.position = 'static'")  # not over the panel
    panel.scroll_into_view_if_needed()
    panel.screenshot(path=str(screenshot_dir / "vm-monitoring.png"))

    # A new sample is stored: the page appends it without a reload.
    samples_record(host=test_host, domains=_reading(vm, 121), now=timezone.now())
    expect(panel.locator("[data-chart=cpu]")).to_have_attribute("data-points", "121", timeout=STEP * 3000)

    # The day range reads the 5-minute rows (none rolled yet here: the empty note shows).
    panel.get_by_role("button", name="Last day").click()
    expect(panel.get_by_role("button", name="Last day")).to_have_attribute("aria-pressed", "true")
    expect(panel.locator("[data-chart=cpu]")).to_have_attribute("data-points", "0")
    expect(panel.locator("[data-metrics-empty]")).to_be_visible()
    assert page.evaluate("window.__sameDocument") is True
    assert not problems, problems
