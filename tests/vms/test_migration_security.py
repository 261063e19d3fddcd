"""Security review of live migration (issue #12): users never read a destination's address in a failed
migration, and a failed migration never deletes disks a domain on the destination may be using."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import transaction

from cluster.models import Host
from portal.exceptions import OperationFailed, user_message
from portal.hypervisor import PowerState, get_driver
from portal.jobs import job_create
from portal.models import AuditEvent, Job
from storage.models import StoragePool, Volume
from vms import services
from vms.choices import VMStatus
from vms.migration import _migrate_failed
from vms.models import VM


@pytest.fixture
def running_vm(test_host, alice):
    result = services.vm_create(actor=alice, via="cli", name="sec-1", vcpus=1, memory_mib=128, disk_gib=1)
    job = Job.objects.get(pk=result.job.pk)
    assert job.status == "succeeded", job.error
    return VM.objects.get(pk=result.vm.pk)


@pytest.mark.django_db(transaction=True)
def test_a_failed_migration_names_no_destination_address_to_users(running_vm, test_host):
    driver = get_driver(test_host.uri)
    with pytest.raises(OperationFailed) as caught:  # the test driver cannot migrate: a real libvirt refusal
        driver.migrate(str(running_vm.uuid), dest_uri="qemu+tcp://root@10.1.2.3:16509/system",
                       dest_driver=driver, timeout=30)
    exc = caught.value
    assert "10.1.2.3" not in exc.message and "root@" not in exc.message
    assert "10.1.2.3" not in user_message(exc)
    assert "10.1.2.3" in exc.detail  # administrators still read where it went


@pytest.mark.django_db(transaction=True)
def test_a_failed_migration_keeps_destination_disks_while_the_domain_is_there(running_vm, test_host, alice):
    """The source does not answer, and the VM's domain runs on the destination (the migration went through
    before the source died): the destination's disks stay (they are the running VM's), the audit says so."""
    vm = running_vm
    with transaction.atomic():
        source = Host.objects.create(name="gone", uri="qemu+tcp://127.0.0.1:1/system", status="up",
                                     cluster=test_host.cluster, memory_mib=8192, cpus=4)
        gone_pool = StoragePool.objects.create(host=source, name=settings.STORAGE_POOL, path="/nonexistent/pool")
        disk = vm.disks.select_related("volume__pool").get(target="vda")
        dest_pool = disk.volume.pool
        # The record: the VM on "gone" (its disk row there); the destination (test host) has the new copy.
        Volume.objects.filter(pk=disk.volume.pk).update(pool=gone_pool)
        info = get_driver(test_host.uri).create_volume(pool=dest_pool.name, name=disk.volume.name + ".dest",
                                                       capacity_bytes=1 << 20, fmt="qcow2")
        copy = Volume.objects.create(pool=dest_pool, name=disk.volume.name, format="qcow2", capacity_gib=1,
                                     path=info.path)
        VM.objects.filter(pk=vm.pk).update(host=source, status=VMStatus.MIGRATING)
        job = job_create(kind="vm.migrate", actor=None, via="system", target=vm, max_attempts=1,
                         params={"source_host_id": source.pk, "target_host_id": test_host.pk,
                                 "previous": VMStatus.RUNNING})
    assert get_driver(test_host.uri).domain_info(str(vm.uuid)).state == PowerState.RUNNING

    _migrate_failed(job, "the worker stopped")

    assert Volume.objects.filter(pk=copy.pk).exists()
    assert AuditEvent.objects.filter(action="vm.migrate", outcome="failed", target_id=str(vm.pk),
                                     message__contains="are kept").exists()
