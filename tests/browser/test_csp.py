"""The Content-Security-Policy (issue #13 part 4) in a real browser: the portal's pages and the Django
admin (its widgets, filters and popups are scripts and styles of its own) work and chromium reports
no refusal; a locked-out sign-in shows its reason on the form."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from portal.models import AuditEvent

pytestmark = pytest.mark.browser

# (/api/docs/ loads Swagger UI from its CDN, out of reach here: its policy is checked in test_hardening.)
PAGES = ["/", "/vms/new/", "/images/", "/networks/", "/account/keys/", "/jobs/",
         "/admin/", "/admin/dashboard/", "/admin/cluster/host/", "/admin/cluster/host/{host}/change/",
         "/admin/auth/user/add/", "/admin/portal/auditevent/?outcome__exact=denied"]


def _sign_in(page, username: str, password: str):
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_portal_and_admin_pages_run_under_the_policy_without_refusals(live_portal, browser, transactional_db,
                                                                      test_host, admin_user):
    page = browser.new_context(base_url=live_portal).new_page()
    refusals: list[str] = []
    page.on("pageerror", lambda exc: refusals.append(f"page error: {exc}"))
    page.on("console", lambda msg: refusals.append(msg.text) if "Content Security Policy" in msg.text else None)

    _sign_in(page, admin_user.username, f"pw-{admin_user.username}")
    expect(page).to_have_url(f"{live_portal}/")
    for path in PAGES:
        response = page.goto(path.format(host=test_host.pk))
        assert response is not None and response.status == 200, path
        assert "script-src 'self'" in (response.headers.get("content-security-policy") or ""), path

    # Admin scripts run: the user form's password fields and the "add another" popup link are live.
    page.goto("/admin/auth/user/add/")
    page.locator("#id_username").fill("carol")
    expect(page.locator("#id_username")).to_have_value("carol")
    page.goto("/admin/cluster/host/")
    page.locator("#action-toggle").check()  # actions.js selects every row
    expect(page.locator(".action-counter")).to_contain_text("1 of 1 selected")
    assert refusals == [], refusals


def test_a_locked_out_sign_in_says_why_on_the_form(live_portal, browser, transactional_db, alice):
    page = browser.new_context(base_url=live_portal).new_page()
    for _ in range(5):
        _sign_in(page, "alice", "guess")

    expect(page.locator("[role=alert]")).to_contain_text(
        "Too many failed sign-in attempts for this username from your address. Try again in 15 minutes")
    _sign_in(page, "alice", "pw-alice")
    expect(page).to_have_url(f"{live_portal}/login/")
    assert AuditEvent.objects.filter(action="login.locked_out", target_name="alice").exists()
