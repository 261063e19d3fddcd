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
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from portal.hypervisor import get_driver
from portal.models import Job
from tests.browser.conftest import _postgres_url
from vms import services
from vms.choices import VMStatus
from vms.models import VM

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.postgres,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="portal processes share the test database"),
]


class Processes:
    """Portal processes on the test database; every one is ended when the test ends."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []
        self.env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.browser.settings", "PYTHONUNBUFFERED": "1",
                    "PORTAL_DATABASE_URL": _postgres_url(connection.settings_dict)}
        self.env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)

    def command(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "manage.py", *args], cwd=settings.BASE_DIR, env={**self.env, **env},
                              capture_output=True, text=True, timeout=60)

    def start(self, name: str, *args: str, **env: str) -> subprocess.Popen:
        log = self.tmp_path / f"{name}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen([sys.executable, "manage.py", *args], cwd=settings.BASE_DIR,
                                    env={**self.env, **env}, stdout=fh, stderr=subprocess.STDOUT)
        self.procs.append((name, proc, log))
        return proc

    def wait_for_log(self, name: str, text: str, timeout: float = 20) -> None:
        log = self.tmp_path / f"{name}.log"
        deadline = time.monotonic() + timeout
        while text not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, f"{text!r} not in {name} log:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)

    def stop_all(self) -> None:
        for _name, proc, _log in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for name, proc, log in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            print(f"--- {name} log (tail) ---\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def processes(tmp_path):
    p = Processes(tmp_path)
    yield p
    p.stop_all()


def _wait_for(predicate, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"{what} not seen within {timeout} s"
        time.sleep(0.1)
    return time.monotonic() - start


def _status(vm: VM) -> str:
    return VM.objects.values_list("status", flat=True).get(pk=vm.pk)


def test_monitor_shows_virsh_destroy_and_undefine_within_seconds(qemu_host, firmware_image, alice, processes):
    vm = services.vm_create(actor=alice, via="cli", name="drift-live", vcpus=1, memory_mib=64, disk_gib=1).vm
    assert _status(vm) == VMStatus.RUNNING
    driver = get_driver(qemu_host.uri)
    # Reconcile only at start: what follows must come from libvirt's lifecycle events.
    processes.start("monitor", "hypervisor_monitor", PORTAL_RECONCILE_SECONDS="600")
    processes.wait_for_log("monitor", "watching lifecycle events")
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


def test_killed_worker_leaves_no_job_running_forever(qemu_host, firmware_image, alice, processes):
    # A firmware-only guest ignores the ACPI button, so its Stop job keeps waiting: a long job to kill.
    vm = services.vm_create(actor=alice, via="cli", name="orphan", vcpus=1, memory_mib=64, disk_gib=1).vm
    queued = processes.command("vm", "--user", alice.username, "stop", vm.name)
    assert queued.returncode == 0, queued.stderr
    job = Job.objects.get(kind="vm.stop", target_id=str(vm.pk))
    worker = processes.start("worker1", "db_worker", "--no-startup-delay", "--no-reload", "--interval", "0.3",
                             PORTAL_STOP_TIMEOUT_SECONDS="120", PORTAL_JOB_HEARTBEAT_SECONDS="1")
    _wait_for(lambda: Job.objects.get(pk=job.pk).status == "running", 20, "the job running in worker1")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    assert Job.objects.get(pk=job.pk).status == "running"  # orphaned: nobody heart-beats it any more

    processes.start("monitor", "hypervisor_monitor", PORTAL_RECONCILE_SECONDS="1", PORTAL_JOB_STALE_SECONDS="3")
    processes.start("worker2", "db_worker", "--no-startup-delay", "--no-reload", "--interval", "0.3",
                    PORTAL_STOP_TIMEOUT_SECONDS="3", PORTAL_JOB_HEARTBEAT_SECONDS="1")
    _wait_for(lambda: Job.objects.get(pk=job.pk).status in ("succeeded", "failed"), 40, "the job ending")
    job.refresh_from_db()
    assert job.attempts == 2 and job.status == "failed"
    assert "did not power off" in job.error
    vm.refresh_from_db()
    assert vm.status == VMStatus.RUNNING  # what libvirt says, not a VM stuck in "stopping"
    services.vm_delete(actor=alice, via="cli", vm=vm)
