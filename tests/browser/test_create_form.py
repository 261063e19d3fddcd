"""The create form in a real browser: for a team member, choosing the VM's owner switches the
remaining quota shown and the size check to that team's (no hypervisor needed)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import expect

from quotas.models import Quota
from vms.models import Flavor

pytestmark = pytest.mark.browser


def test_owner_choice_switches_the_quota_the_size_is_checked_against(live_portal, browser, transactional_db,
                                                                    test_host, alice):
    team = Group.objects.create(name="infra")
    alice.groups.add(team)
    Quota.objects.update_or_create(user=alice, defaults={"max_vms": 3, "max_vcpus": 1, "max_memory_mib": 512,
                                                         "max_disk_gib": 10})
    Quota.objects.create(group=team, max_vms=5, max_vcpus=8, max_memory_mib=8192, max_disk_gib=100)
    Flavor.objects.create(name="medium", vcpus=2, memory_mib=1024, disk_gib=4)

    page = browser.new_context(base_url=live_portal).new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.goto("/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("pw-alice")
    page.get_by_role("button", name="Sign in").click()
    page.goto("/vms/new/")

    check = page.locator("[data-quota-check]")
    page.get_by_role("radio", name="medium").check()
    expect(check).to_have_text("This size needs more vCPUs, memory than your quota has left.")
    expect(page.locator("[data-remaining=vcpus] [data-remaining-left]")).to_have_text("1")

    page.get_by_label("Owner").select_option("infra")
    expect(check).to_have_text("✓ This size fits team infra's remaining quota.")
    expect(page.locator("[data-remaining=vcpus] [data-remaining-left]")).to_have_text("8")
    expect(page.locator("[data-remaining=memory_mib] [data-remaining-limit]")).to_have_text("left of 8 GiB")
    expect(page.locator("#remaining-title")).to_contain_text("(team infra)")
    assert problems == []
