"""An expired VM is really stopped on qemu:///system by the lease pass (a firmware-only domain: SeaBIOS
ignores the ACPI power button, so the graceful stop times out and the next turn forces it off)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from portal.hypervisor import PowerState, get_driver
from portal.models import AuditEvent, Job
from vms import leases, services
from vms.choices import VMStatus
from vms.models import VM

pytestmark = pytest.mark.qemu


def test_expired_vm_is_stopped_on_the_host(qemu_host, firmware_image, alice, settings):
    settings.STOP_TIMEOUT_SECONDS = 2  # the ACPI wait of the pass's graceful stop (the job fails after it)
    result = services.vm_create(actor=alice, via="api", name="lease-fw", vcpus=1, memory_mib=64, disk_gib=1,
                                lease_days=1)
    vm = VM.objects.get(pk=result.vm.pk)
    driver = get_driver(qemu_host.uri)
    assert vm.status == VMStatus.RUNNING and driver.domain_info(str(vm.uuid)).state == PowerState.RUNNING
    now = vm.expires_at + timedelta(minutes=1)

    first = leases.lease_pass(now=now)  # the graceful stop (a vm.stop job; it runs at once in tests)
    assert first["stopped"] == 1
    stop = Job.objects.get(target_id=str(vm.pk), kind="vm.stop")
    assert stop.via == "system" and stop.actor is None and stop.status in ("failed", "succeeded")
    if stop.status == "failed":  # the guest ignored ACPI: the next turn cuts the power
        second = leases.lease_pass(now=now + timedelta(minutes=1))
        assert second["forced"] == 1
        assert Job.objects.get(target_id=str(vm.pk), kind="vm.force_off").status == "succeeded"
    vm.refresh_from_db()
    assert vm.status == VMStatus.STOPPED
    assert driver.domain_info(str(vm.uuid)).state != PowerState.RUNNING  # libvirt says it: not running
    assert AuditEvent.objects.filter(action="vm.lease.expired", target_id=str(vm.pk), via="system").exists()
    services.vm_delete(actor=alice, via="api", vm=vm.pk)
    assert not driver.domain_exists(str(vm.uuid))
