"""The usage report in chromium (issue #14, part 3): the admin page renders its SVG bars and peak bars from
known samples under the Content-Security-Policy, with no script; screenshot reports-usage.png."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import expect

from tests.reports.fixtures import T0, host, hourly, vm

pytestmark = pytest.mark.browser


def test_usage_report_page_draws_bars_in_the_browser(live_portal, browser, transactional_db, screenshot_dir,
                                                      admin_user, alice, bob):
    h = host()
    lab = Group.objects.create(name="lab")
    hourly(vm(alice, h, name="a1"), T0, 10, cpu_pct=40)
    hourly(vm(alice, h, name="a2", vcpus=1), T0 + timedelta(hours=2), 5, cpu_pct=3)
    hourly(vm(bob, h, name="b1", vcpus=4, memory_mib=4096, group=lab), T0, 6, seconds=1800, cpu_pct=70)
    page = browser.new_context(base_url=live_portal, viewport={"width": 1400, "height": 900}).new_page()
    refusals: list[str] = []
    page.on("console", lambda msg: refusals.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.goto("/login/")
    page.get_by_label("Username").fill(admin_user.username)
    page.get_by_label("Password").fill(f"pw-{admin_user.username}")
    page.get_by_role("button", name="Sign in").click()
    page.goto("/admin/")
    page.get_by_role("link", name="Usage reports →").click()
    page.locator("#id_start").fill("2026-11-02")
    page.locator("#id_end").fill("2026-11-02")
    page.get_by_role("button", name="Show").click()
    chart = page.locator("svg.preport-chart")
    expect(chart).to_be_visible()
    expect(chart.locator("rect")).to_have_count(2)
    box = chart.locator("rect").first.bounding_box()
    assert box is not None and box["width"] > 300  # the largest consumer's bar is the full length
    expect(page.locator("#usage-rows tbody tr").first).to_contain_text("alice")
    expect(page.locator("#usage-rows tbody tr").first).to_contain_text("25.00")  # 20 + 5 vCPU-hours
    page.screenshot(path=str(screenshot_dir / "reports-usage.png"), full_page=True)
    assert refusals == [], refusals
