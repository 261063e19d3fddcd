"""The create form in a real browser: for a team member, choosing the VM's owner switches the
remaining quota shown and the size check to that team's; the thin/full choice shows for templates
only (no hypervisor needed)."""

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


def test_thin_or_full_is_offered_for_templates_only(live_portal, browser, transactional_db, test_host, alice):
    """Choosing a template shows "Disk from a template"; another image hides it (and goes back to thin);
    a full copy with the template's sizes is what the service records."""
    from portal.models import AuditEvent
    from storage.models import Image
    from vms.models import VM

    blank = Image.objects.get(name="test-blank")
    Image.objects.create(name="tpl-web", kind=Image.Kind.TEMPLATE, title="Web template", pool=blank.pool,
                         volume_name=blank.volume_name, path=blank.path, size_bytes=blank.size_bytes, owner=alice,
                         visibility=Image.Visibility.PRIVATE, default_vcpus=1, default_memory_mib=256,
                         min_disk_gib=2)
    page = browser.new_context(base_url=live_portal).new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.goto("/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("pw-alice")
    page.get_by_role("button", name="Sign in").click()
    page.goto("/vms/new/")

    choice = page.locator("[data-clone-choice]")
    expect(choice).to_be_hidden()  # the default image is not a template
    page.get_by_role("radio", name="Web template").check()
    expect(choice).to_be_visible()
    page.get_by_role("radio", name="Full copy").check()
    page.get_by_role("radio", name="Blank (test driver)").check()
    expect(choice).to_be_hidden()
    expect(choice.locator("input[value=thin]")).to_be_checked()  # hidden: not in the accessibility tree
    page.get_by_role("radio", name="Web template").check()
    page.get_by_role("radio", name="Full copy").check()
    page.get_by_label("Name", exact=True).fill("full-1")
    page.get_by_role("radio", name="Custom").check()
    page.get_by_role("button", name="Create VM").click()
    page.wait_for_url("**/vms/*/")
    vm = VM.objects.get(name="full-1")
    assert (vm.vcpus, vm.memory_mib, vm.disk_gib) == (1, 256, 2)
    # What the service recorded at create (the audit), not the disk rows: the worker's own test:///default
    # has no copy of the template, so its job fails and removes them, maybe before this line runs.
    event = AuditEvent.objects.get(action="vm.create", target_id=str(vm.pk), outcome=AuditEvent.Outcome.REQUESTED)
    assert (event.data["clone"], event.data["image"]) == ("full", "tpl-web")
    assert problems == []
