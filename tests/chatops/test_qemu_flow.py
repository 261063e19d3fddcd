"""The whole Slack conversation on the real hypervisor (qemu:///system) with the tiny Linux guest:
`/vm create` -> "creating" in the channel -> "running" in the thread with [Stop] [Pause] [Console] [Delete]
-> the Stop button (ACPI: the guest powers itself off) -> the Delete button -> nothing left in libvirt.
"""

from __future__ import annotations

import time

import pytest

from portal.hypervisor import PowerState, get_driver
from portal.models import AuditEvent, Job
from vms.models import VM, Flavor

from .conftest import CHANNEL, reply_of

pytestmark = [pytest.mark.timeout(600)]

BOOT_MARKER = b"PORTAL GUEST READY"


def _wait_for_guest(uri: str, uuid: str, timeout: float = 120) -> None:
    """ACPI shutdown only works once the guest's kernel handles the power button: wait for its shell."""
    console = get_driver(uri).open_console(uuid)
    try:
        deadline = time.monotonic() + timeout
        seen = b""
        while time.monotonic() < deadline:
            console.write(b"\necho slack-$((6*7))\n")
            until = time.monotonic() + 3
            while time.monotonic() < until:
                data = console.read(timeout=0.3)
                if data is None:
                    raise AssertionError(f"console closed; got {seen[-400:]!r}")
                seen += data
                if BOOT_MARKER in seen or b"slack-42" in seen:
                    return
        raise AssertionError(f"guest did not boot within {timeout} s; console: {seen[-600:]!r}")
    finally:
        console.close()


def test_create_notify_button_stop_and_delete_on_the_real_hypervisor(slack, alice, link, qemu_host, guest_image):
    link(alice, "UALICE")
    Flavor.objects.create(name="guest", vcpus=1, memory_mib=256, disk_gib=1)
    driver = get_driver(qemu_host.uri)

    # /vm create: acknowledged, announced in the channel, followed up in the thread once running.
    response = slack.command("create slack-web --flavor guest --image test-guest")
    assert reply_of(response) == {}
    vm = VM.objects.get(name="slack-web")
    assert vm.status == "running" and vm.host == qemu_host
    assert driver.domain_info(str(vm.uuid)).state == PowerState.RUNNING
    parent, running = slack.fake.posts(CHANNEL)
    assert "<@UALICE> is creating *slack-web*" in parent.text
    assert running.body["thread_ts"] == parent.ts
    assert "✅ *slack-web* is running." in running.text
    assert [b["text"]["text"] for b in running.buttons] == ["Stop", "Pause", "Console", "Delete"]

    # [Stop]: the guest gets the ACPI power button and shuts down by itself.
    _wait_for_guest(qemu_host.uri, str(vm.uuid))
    slack.fake.clear()
    assert slack.click_button(running, "Stop").status_code == 200
    stop_job = Job.objects.get(kind="vm.stop")
    assert stop_job.status == "succeeded", stop_job.error
    vm.refresh_from_db()
    assert vm.status == "stopped"
    assert driver.domain_info(str(vm.uuid)).state == PowerState.SHUTOFF
    [replaced] = slack.fake.responses()
    assert "Stopping slack-web." in replaced.text and replaced.body["replace_original"] is True
    [stopped] = slack.fake.posts(CHANNEL)
    assert stopped.body["thread_ts"] == parent.ts and "⏹️ *slack-web* stopped." in stopped.text

    # [Delete] on the "stopped" message: domain and disk are gone.
    slack.fake.clear()
    assert slack.click_button(stopped, "Delete").status_code == 200
    vm.refresh_from_db()
    assert vm.status == "deleted"
    assert not driver.domain_exists(str(vm.uuid))
    volumes = {v.name for v in driver.list_volumes(pool=guest_image.pool.name)}
    assert not any(name.startswith(vm.domain_name) for name in volumes)
    [deleted] = slack.fake.posts(CHANNEL)
    assert deleted.body["thread_ts"] == parent.ts and "🗑️ *slack-web* was deleted" in deleted.text

    # Every step is audited as Slack, with the Slack user and channel.
    for action in ("vm.create", "vm.stop", "vm.delete"):
        event = AuditEvent.objects.get(action=action, outcome="requested")
        assert (event.via, event.data["slack_user"], event.data["slack_channel"]) == ("slack", "UALICE", CHANNEL)
