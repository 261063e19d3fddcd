"""Bulk creation on qemu:///system (issue #14): 20 firmware-only VMs from one request, started by four workers
with at most BULK_PARALLELISM of the batch running at once, all running; the quota holds (a 21st is refused);
a replay of the idempotency key creates nothing; then every VM is deleted and nothing is left on the host."""

from __future__ import annotations

import threading
import time

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import close_old_connections
from django.test import override_settings

from cluster.models import Cluster
from portal import jobs
from portal.choices import JobStatus
from portal.exceptions import QuotaExceeded
from portal.hypervisor import PowerState, get_driver
from portal.models import Job
from quotas.models import Quota
from tests.support import wait_for
from vms import bulk, services
from vms.choices import VMStatus
from vms.models import VM

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(600)]

COUNT = 20
PARALLELISM = 3  # below Host.max_jobs (4): what holds the children back is the batch's own gate
DUMMY_TASKS = {"default": {"BACKEND": "django.tasks.backends.dummy.DummyBackend"}}


def _worker(parent_id, stop: threading.Event, errors: list) -> None:
    """A job worker: offers the batch's pending children to run_job (the claim gate decides)."""
    try:
        while not stop.is_set():
            pending = list(Job.objects.filter(parent_id=parent_id, status=JobStatus.PENDING)
                           .order_by("created_at").values_list("pk", flat=True))
            if not pending:
                time.sleep(0.05)
                continue
            for pk in pending:
                jobs.run_job(pk)
    except Exception as exc:  # surfaced by the test
        errors.append(exc)
    finally:
        close_old_connections()


def _sampler(parent_id, stop: threading.Event, peak: list) -> None:
    try:
        while not stop.is_set():
            peak[0] = max(peak[0], Job.objects.filter(parent_id=parent_id, status=JobStatus.RUNNING).count())
            time.sleep(0.02)
    finally:
        close_old_connections()


def test_twenty_vms_from_one_request(qemu_host, firmware_image):
    # 20 one-vCPU VMs on this 2-CPU machine: more vCPUs per CPU than the scheduler's default 4 (set-up).
    Cluster.objects.filter(hosts=qemu_host).update(policy_properties={"vcpu_overcommit_ratio": 16})
    user = get_user_model().objects.create_user("bulkq", password="x")
    Quota.objects.create(user=user, max_vms=COUNT, max_vcpus=COUNT, max_memory_mib=64 * COUNT,
                         max_disk_gib=COUNT)
    driver = get_driver(qemu_host.uri)
    ask = {"actor": user, "via": "api", "count": COUNT, "name_pattern": "bulkq-{n:02}", "vcpus": 1,
           "memory_mib": 64, "disk_gib": 1, "networks": [], "idempotency_key": "qemu-class-20"}
    stop, errors, peak = threading.Event(), [], [0]
    with override_settings(TASKS=DUMMY_TASKS, BULK_PARALLELISM=PARALLELISM):
        result = bulk.vm_bulk_create(**ask)
        assert (result.created, result.replayed) == (COUNT, False)
        parent = result.job
        threads = [threading.Thread(target=_worker, args=(parent.pk, stop, errors)) for _ in range(4)]
        threads.append(threading.Thread(target=_sampler, args=(parent.pk, stop, peak)))
        for t in threads:
            t.start()
        try:
            wait_for(lambda: Job.objects.get(pk=parent.pk).status in JobStatus.FINISHED, 420,
                     "the batch's parent job finishing")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
    assert not errors, errors
    parent.refresh_from_db()
    assert parent.status == JobStatus.SUCCEEDED, parent.error
    assert parent.progress == 100 and parent.result["succeeded"] == COUNT
    assert 2 <= peak[0] <= PARALLELISM, f"peak {peak[0]} children running at once"
    vms = list(VM.objects.filter(owner=user).order_by("name"))
    assert [vm.name for vm in vms] == [f"bulkq-{n:02}" for n in range(1, COUNT + 1)]
    assert {vm.status for vm in vms} == {VMStatus.RUNNING}
    assert {driver.domain_info(str(vm.uuid)).state for vm in vms} == {PowerState.RUNNING}

    # The quota holds: a 21st VM is refused, through bulk and the single create.
    with pytest.raises(QuotaExceeded):
        bulk.vm_bulk_create(**{**ask, "count": 1, "name_pattern": "bulkq-extra", "idempotency_key": None})
    with pytest.raises(QuotaExceeded):
        services.vm_create(actor=user, via="api", name="bulkq-21", vcpus=1, memory_mib=64, disk_gib=1, networks=[])
    # A replay of the request creates nothing new and answers with the same parent job.
    again = bulk.vm_bulk_create(**ask)
    assert again.replayed and again.job.pk == parent.pk
    assert VM.objects.filter(owner=user).count() == COUNT
    assert Job.objects.filter(kind="vm.create", actor=user).count() == COUNT

    # Delete them all (the test settings' immediate backend runs each delete job), leaving nothing behind.
    for vm in vms:
        deleted = services.vm_delete(actor=user, via="api", vm=vm)
        deleted.job.refresh_from_db()
        assert deleted.job.status == JobStatus.SUCCEEDED, deleted.job.error
    assert set(VM.objects.filter(owner=user).values_list("status", flat=True)) == {VMStatus.DELETED}
    assert not {d.uuid for d in driver.list_domains()} & {str(vm.uuid) for vm in vms}
    volumes = {v.name for v in driver.list_volumes(pool=settings.STORAGE_POOL)}
    assert not [name for name in volumes if any(name.startswith(vm.domain_name) for vm in vms)]
    for vm in vms:
        assert not driver.domain_exists(str(vm.uuid))
