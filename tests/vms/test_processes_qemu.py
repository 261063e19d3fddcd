"""The portal's background processes for real: the hypervisor monitor and the job worker, as
`manage.py runportal` starts them, against qemu:///system and the PostgreSQL test database.

- Drift: a domain stopped or removed behind the portal's back (as `virsh destroy` / `virsh undefine`
  would) shows in the portal within seconds, from libvirt's lifecycle events alone.
- A worker killed (SIGKILL) in the middle of a job leaves no job stuck in `running`: the monitor
  notices the missing heartbeat and the job is retried by another worker, then ends.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.db import connection

from portal.hypervisor import get_driver
from portal.models import Job
from tests.browser.conftest import _postgres_url
from tests.support import MANAGE, processes
from vms import services
from vms.choices import VMStatus
from vms.models import VM

WORKER = [*MANAGE, "db_worker", "--no-startup-delay", "--no-reload", "--interval", "0.3"]

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.postgres,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="portal processes share the test database"),
]


@pytest.fixture
def portal_processes(tmp_path):
    """Portal processes on the test database (jobs through the database queue, as in production)."""
    env = {"DJANGO_SETTINGS_MODULE": "tests.browser.settings",
           "PORTAL_DATABASE_URL": _postgres_url(connection.settings_dict)}
    with processes(tmp_path, env) as procs:
        yield procs


def _wait_for(predicate, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"{what} not seen within {timeout} s"
        time.sleep(0.1)
    return time.monotonic() - start


def _status(vm: VM) -> str:
    return VM.objects.values_list("status", flat=True).get(pk=vm.pk)


def test_monitor_shows_virsh_destroy_and_undefine_within_seconds(qemu_host, firmware_image, alice,
                                                                  portal_processes):
    vm = services.vm_create(actor=alice, via="cli", name="drift-live", vcpus=1, memory_mib=64, disk_gib=1).vm
    assert _status(vm) == VMStatus.RUNNING
    driver = get_driver(qemu_host.uri)
    # Reconcile only at start: what follows must come from libvirt's lifecycle events.
    portal_processes.start("monitor", [*MANAGE, "hypervisor_monitor"], PORTAL_RECONCILE_SECONDS="600",
                           PORTAL_LOG_LEVEL="INFO")  # make test runs at WARNING; the wait reads INFO lines
    portal_processes.wait_for_log("monitor", "watching lifecycle events", timeout=60)
    try:
        driver.destroy(str(vm.uuid))
        seconds = _wait_for(lambda: _status(vm) == VMStatus.STOPPED, 5, "stopped after destroy")
        print(f"destroy seen after {seconds:.2f} s")
        driver.undefine(str(vm.uuid))
        _wait_for(lambda: _status(vm) == VMStatus.ERROR, 5, "error after undefine")
        vm.refresh_from_db()
        assert "missing" in vm.last_error
    finally:
        services.vm_delete(actor=alice, via="cli", vm=vm)


def test_killed_worker_leaves_no_job_running_forever(qemu_host, firmware_image, alice, portal_processes):
    # A firmware-only guest ignores the ACPI button, so its Stop job keeps waiting: a long job to kill.
    vm = services.vm_create(actor=alice, via="cli", name="orphan", vcpus=1, memory_mib=64, disk_gib=1).vm
    queued = portal_processes.run([*MANAGE, "vm", "--user", alice.username, "stop", vm.name])
    assert queued.returncode == 0, queued.stderr
    job = Job.objects.get(kind="vm.stop", target_id=str(vm.pk))
    worker = portal_processes.start("worker1", WORKER, PORTAL_STOP_TIMEOUT_SECONDS="120",
                                    PORTAL_JOB_HEARTBEAT_SECONDS="1")
    _wait_for(lambda: Job.objects.get(pk=job.pk).status == "running", 20, "the job running in worker1")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    assert Job.objects.get(pk=job.pk).status == "running"  # orphaned: nobody heart-beats it any more

    portal_processes.start("monitor", [*MANAGE, "hypervisor_monitor"], PORTAL_RECONCILE_SECONDS="1",
                           PORTAL_JOB_STALE_SECONDS="3")
    portal_processes.start("worker2", WORKER, PORTAL_STOP_TIMEOUT_SECONDS="3", PORTAL_JOB_HEARTBEAT_SECONDS="1")
    _wait_for(lambda: Job.objects.get(pk=job.pk).status in ("succeeded", "failed"), 40, "the job ending")
    job.refresh_from_db()
    assert job.attempts == 2 and job.status == "failed"
    assert "did not power off" in job.error
    vm.refresh_from_db()
    assert vm.status == VMStatus.RUNNING  # what libvirt says, not a VM stuck in "stopping"
    services.vm_delete(actor=alice, via="cli", vm=vm)
