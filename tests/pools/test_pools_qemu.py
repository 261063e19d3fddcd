"""A stateless VM pool on the real qemu:///system hypervisor: a file written in a taken VM is gone once the VM
has been returned (its disk made again from the image) and taken again."""

from __future__ import annotations

import uuid

import pytest

from pools import services
from portal.models import Job
from tests.guest_shell import GuestShell
from vms.choices import VMStatus

pytestmark = [pytest.mark.qemu, pytest.mark.django_db(transaction=True)]


def test_a_stateless_pool_vm_comes_back_reset_to_its_image(qemu_host, guest_image, make_user, alice):
    admin = make_user("pool-admin", staff=True, quota={"max_vms": 2, "max_vcpus": 2, "max_memory_mib": 512,
                                                      "max_disk_gib": 4})
    pool = services.pool_create(actor=admin, via="cli", name="busy", image=guest_image, vcpus=1, memory_mib=128,
                                disk_gib=1, prestarted=1, max_size=1, stateless=True, everyone=True)
    assert services.pool_replenish(pool=pool) == ["busy-01"]
    vm = services.pool_take(actor=alice, via="web", pool="busy").vm
    assert vm.status == VMStatus.RUNNING
    marker = uuid.uuid4().hex[:12]
    with GuestShell(qemu_host.uri, str(vm.uuid)) as shell:
        shell.wait_ready(timeout=180)
        assert shell.run(f"echo {marker} > /root/marker; sync; cat /root/marker").output.strip() == marker

    services.pool_return(actor=alice, via="web", vm=vm)
    reset = Job.objects.get(kind="vm.reset")
    assert reset.status == "succeeded", reset.error

    again = services.pool_take(actor=alice, via="web", pool="busy").vm
    assert again.pk == vm.pk and again.status == VMStatus.RUNNING  # the pool's only VM, running again
    with GuestShell(qemu_host.uri, str(again.uuid)) as shell:
        shell.wait_ready(timeout=180)
        result = shell.run("cat /root/marker")
        assert result.status != 0 and marker not in result.output, result.output
    services.pool_return(actor=alice, via="web", vm=again)
    services.pool_delete(actor=admin, via="cli", pool=pool)
    assert Job.objects.filter(kind="vm.delete", status="succeeded").count() == 1
