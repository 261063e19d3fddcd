"""Live migration on the two-host harness (vmp-hosta, vmp-hostb: real libvirtd's joined over TCP), and
VMs that move behind the portal's back (`virsh migrate`): never lost, never started twice.

One real Linux guest boot (the counter keeps counting across two migrations); the rest are
firmware-only domains (SeaBIOS, no OS). The doors (API, admin, CLI, Slack, web) are checked on the
test driver at the end: their record-phase answers, and a job that fails leaving the VM where it was.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings

from cluster.models import Cluster, ForeignDomain, Host
from cluster.services import host_sync
from portal.exceptions import InvalidState, PermissionDenied, ValidationFailed
from portal.hypervisor import PowerState, get_driver
from portal.models import AuditEvent, Job
from storage.models import StoragePool, Volume
from storage.services import image_register
from tests.guest_shell import GuestShell
from vms import services
from vms.choices import VMStatus
from vms.migration import vm_migrate
from vms.models import VM

GUEST_DIR = Path(settings.GUEST_DIR)


def job_of(result) -> Job:
    return Job.objects.get(pk=result.job.pk)


def job_ok(result) -> Job:
    job = job_of(result)
    assert job.status == "succeeded", f"{job.kind}: {job.status} {job.error} {job.error_detail}"
    return job


def state_on(host, vm) -> PowerState | None:
    try:
        return get_driver(host.uri).domain_info(str(vm.uuid)).state
    except Exception:
        return None


def create_on(host_a, host_b, *, owner, name, image, memory_mib=64):
    """A VM created on host a (b is disabled meanwhile, so placement picks a)."""
    Host.objects.filter(pk=host_b.pk).update(enabled=False)
    try:
        result = services.vm_create(actor=owner, via="cli", name=name, image=image, vcpus=1, memory_mib=memory_mib,
                                    disk_gib=1)
        job_ok(result)
    finally:
        Host.objects.filter(pk=host_b.pk).update(enabled=True)
    vm = VM.objects.select_related("host").get(pk=result.vm.pk)
    assert vm.host_id == host_a.pk and vm.status == VMStatus.RUNNING
    return vm


def firmware_image(host, tmp_path, name="mig-firmware"):
    src = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), "16M"], check=True)
    return image_register(actor=None, host=host, name=name, title="Firmware only", source_path=str(src),
                          fmt="qcow2", replace=True)


def test_live_migration_keeps_the_guest_running_moves_its_disk_and_records_it(cluster_hosts, alice, admin_user):
    host_a, host_b = cluster_hosts
    root = GUEST_DIR / "root.qcow2"
    if not root.exists():
        pytest.fail(f"{root} is missing: run scripts/build-guest.sh")
    image = image_register(
        actor=None, host=host_a, name="mig-guest", title="Tiny Linux guest", source_path=str(root), fmt="qcow2",
        boot_mode="kernel", kernel_path=str(GUEST_DIR / "vmlinuz"), initrd_path=str(GUEST_DIR / "initrd.gz"),
        cmdline="console=tty0 console=ttyS0,115200 portalroot=/dev/vda portalhost={hostname}", replace=True)
    vm = create_on(host_a, host_b, owner=alice, name="mover", image=image, memory_mib=128)
    source_disk = vm.volumes.get()
    assert os.path.exists(source_disk.path)

    with GuestShell(host_a.uri, str(vm.uuid)) as shell:
        shell.wait_ready()
        shell.write("(i=0; while true; do i=$((i+1)); echo $i > /tmp/tick; sleep 1; done) </dev/null >/dev/null 2>&1 &\n")
        before = shell.run("sleep 2; cat /tmp/tick; cut -d' ' -f1 /proc/uptime").output.split()
    tick_before, uptime_before = int(before[0]), float(before[1])
    assert tick_before >= 1

    # Users cannot move VMs; the admin moves it to host b.
    with pytest.raises(PermissionDenied):
        vm_migrate(actor=alice, via="api", vm=vm, host=host_b)
    result = vm_migrate(actor=admin_user, via="api", vm=vm, host=host_b)
    job = job_ok(result)
    vm.refresh_from_db()
    assert vm.host_id == host_b.pk and vm.status == VMStatus.RUNNING and vm.last_error == ""
    assert job.result["source"] == host_a.name and job.result["destination"] == host_b.name
    assert job.result["downtime_ms"] is not None and job.result["downtime_ms"] < 5000
    assert job.result["wall_seconds"] > 0 and job.result["data_mib"] > 0
    assert "migrating" in job.log or "Migrating" in job.log
    # Nothing left on the source: no domain, no disk (file and row); the disk lives in b's pool now.
    assert not get_driver(host_a.uri).domain_exists(str(vm.uuid))
    assert not os.path.exists(source_disk.path)
    assert not Volume.objects.filter(pk=source_disk.pk).exists()
    disk = vm.volumes.select_related("pool").get()
    assert disk.pool.host_id == host_b.pk and os.path.exists(disk.path)
    assert state_on(host_b, vm) == PowerState.RUNNING
    assert get_driver(host_b.uri).domain_info(str(vm.uuid)).persistent
    assert AuditEvent.objects.filter(action="vm.migrate", outcome="requested", target_id=str(vm.pk)).exists()
    assert AuditEvent.objects.filter(action="vm.migrated", outcome="succeeded", target_id=str(vm.pk)).exists()

    # The guest never rebooted: its counter went on counting, its uptime went on growing.
    with GuestShell(host_b.uri, str(vm.uuid)) as shell:
        after = shell.run("sleep 1; cat /tmp/tick; cut -d' ' -f1 /proc/uptime", timeout=60).output.split()
    assert int(after[0]) > tick_before and float(after[1]) > uptime_before

    # Reconcile on both hosts: the VM is where it runs, not missing, not foreign anywhere.
    for host in (host_a, host_b):
        host_sync(host=Host.objects.get(pk=host.pk))
    vm.refresh_from_db()
    assert vm.host_id == host_b.pk and vm.status == VMStatus.RUNNING
    assert not ForeignDomain.objects.exists()

    # "Move to the best host": the only other host of the cluster, a.
    job = job_ok(vm_migrate(actor=admin_user, via="cli", vm=vm))
    vm.refresh_from_db()
    assert vm.host_id == host_a.pk and job.result["destination"] == host_a.name
    assert not get_driver(host_b.uri).domain_exists(str(vm.uuid))
    assert not os.path.exists(disk.path)
    with GuestShell(host_a.uri, str(vm.uuid)) as shell:
        again = shell.run("sleep 1; cat /tmp/tick", timeout=60).output.split()
    assert int(again[0]) > int(after[0])
    job_ok(services.vm_delete(actor=alice, via="cli", vm=vm))


def test_refused_and_failed_migrations_leave_the_vm_running_on_its_source(cluster_hosts, alice, admin_user, tmp_path):
    host_a, host_b = cluster_hosts
    image = firmware_image(host_a, tmp_path)
    vm = create_on(host_a, host_b, owner=alice, name="stayer", image=image)

    # Record-phase refusals: nothing queued, nothing changes.
    with pytest.raises(ValidationFailed):
        vm_migrate(actor=admin_user, via="api", vm=vm, host=host_a)  # its own host
    Host.objects.filter(pk=host_b.pk).update(enabled=False)
    with pytest.raises(ValidationFailed, match="disabled"):
        vm_migrate(actor=admin_user, via="api", vm=vm, host=Host.objects.get(pk=host_b.pk))
    Host.objects.filter(pk=host_b.pk).update(enabled=True, cluster=Cluster.objects.create(name="elsewhere"))
    with pytest.raises(ValidationFailed, match="cluster"):
        vm_migrate(actor=admin_user, via="api", vm=vm, host=Host.objects.get(pk=host_b.pk))
    Host.objects.filter(pk=host_b.pk).update(cluster=host_a.cluster)
    assert AuditEvent.objects.filter(action="vm.migrate", outcome="denied").count() == 3
    vm.refresh_from_db()
    assert vm.status == VMStatus.RUNNING and vm.host_id == host_a.pk

    # Act-phase failure: the source's libvirtd cannot reach the destination (nothing listens there).
    Host.objects.filter(pk=host_b.pk).update(migration_uri="qemu+tcp://10.99.7.2:1/system")
    job = job_of(vm_migrate(actor=admin_user, via="api", vm=vm, host=Host.objects.get(pk=host_b.pk)))
    assert job.status == "failed", job.status
    assert "keeps running" in job.error
    vm.refresh_from_db()
    assert vm.host_id == host_a.pk and vm.status == VMStatus.RUNNING and "Migration to" in vm.last_error
    assert state_on(host_a, vm) == PowerState.RUNNING
    assert not get_driver(host_b.uri).domain_exists(str(vm.uuid))
    # The destination's pre-created disk went again (row and file); the source's is untouched.
    disk = vm.volumes.get()
    assert disk.pool.host_id == host_a.pk and os.path.exists(disk.path)
    assert not Volume.objects.filter(pool__host=host_b).exists()
    names = [v.name for v in get_driver(host_b.uri).list_volumes(pool=StoragePool.objects.get(host=host_b).name)]
    assert disk.name not in names
    assert AuditEvent.objects.filter(action="vm.migrate", outcome="failed", target_id=str(vm.pk)).exists()

    # A stopped VM does not migrate live.
    job_ok(services.vm_force_off(actor=alice, via="cli", vm=vm))
    with pytest.raises(InvalidState, match="running or paused"):
        vm_migrate(actor=admin_user, via="api", vm=vm, host=host_b)
    job_ok(services.vm_delete(actor=alice, via="cli", vm=vm))


def test_shared_pool_migration_and_vms_moved_behind_the_portals_back(cluster_hosts, cluster_shared_pools, ns_pair,
                                                                     alice, admin_user, tmp_path):
    host_a, host_b = cluster_hosts
    hv_a, hv_b = ns_pair
    shared_a, shared_b = cluster_shared_pools
    with override_settings(STORAGE_POOL=shared_a.name):
        image = firmware_image(host_a, tmp_path, name="mig-firmware-shared")
        vm = create_on(host_a, host_b, owner=alice, name="roamer", image=image)
    disk = vm.volumes.select_related("pool").get()
    assert disk.pool_id == shared_a.pk

    # Through the portal, on the shared pool: no copy, the disk's row follows to b's pool row, same file.
    job = job_ok(vm_migrate(actor=admin_user, via="admin", vm=vm, host=host_b))
    vm.refresh_from_db()
    disk.refresh_from_db()
    assert vm.host_id == host_b.pk and disk.pool_id == shared_b.pk and os.path.exists(disk.path)
    assert state_on(host_b, vm) == PowerState.RUNNING and not get_driver(host_a.uri).domain_exists(str(vm.uuid))
    assert job.result["downtime_ms"] is not None

    # Behind the portal's back: `virsh migrate` b -> a. Reconcile finds it on a: moved, not missing, not foreign.
    name = vm.domain_name
    out = hv_b.virsh("migrate", "--live", "--p2p", "--persistent", "--undefinesource", "--unsafe", name,
                     hv_a.tcp_uri, timeout=120)
    assert out.returncode == 0, out.stderr
    host_sync(host=Host.objects.get(pk=host_b.pk))  # the record's host first: the VM is missing there
    vm.refresh_from_db()
    assert vm.host_id == host_a.pk and vm.status == VMStatus.RUNNING, (vm.host_id, vm.status, vm.last_error)
    host_sync(host=Host.objects.get(pk=host_a.pk))
    assert not ForeignDomain.objects.exists()
    moved = AuditEvent.objects.filter(action="vm.moved", target_id=str(vm.pk)).latest("at")
    assert host_a.name in moved.message
    disk.refresh_from_db()
    assert disk.pool_id == shared_a.pk  # the file is in a's shared pool: the row says so

    # Moved again by hand (a -> b) and powered off there; the record still says a, stopped. Start looks on
    # every host: it starts the copy on b, never defines a second one on a.
    out = hv_a.virsh("migrate", "--live", "--p2p", "--persistent", "--undefinesource", "--unsafe", name,
                     hv_b.tcp_uri, timeout=120)
    assert out.returncode == 0, out.stderr
    assert hv_b.virsh("destroy", name).returncode == 0
    VM.objects.filter(pk=vm.pk).update(status=VMStatus.STOPPED)
    job_ok(services.vm_start(actor=alice, via="web", vm=vm))
    vm.refresh_from_db()
    assert vm.host_id == host_b.pk and vm.status == VMStatus.RUNNING
    assert state_on(host_b, vm) == PowerState.RUNNING
    assert not get_driver(host_a.uri).domain_exists(str(vm.uuid))

    # A stale definition of the VM on a (running on b): reported to admins, left alone.
    xml = hv_b.virsh("dumpxml", "--inactive", name).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".xml", delete=False) as fh:
        fh.write(xml)
    try:
        assert hv_a.virsh("define", fh.name).returncode == 0
    finally:
        os.unlink(fh.name)
    for host in (host_a, host_b):
        host_sync(host=Host.objects.get(pk=host.pk))
    vm.refresh_from_db()
    assert vm.host_id == host_b.pk and vm.status == VMStatus.RUNNING
    stale = ForeignDomain.objects.get(host=host_a, uuid=str(vm.uuid))
    assert "stale copy" in stale.owner_hint and vm.name in stale.owner_hint
    assert AuditEvent.objects.filter(action="vm.stale_copy", target_id=str(vm.pk)).count() == 1
    assert get_driver(host_a.uri).domain_exists(str(vm.uuid))  # not deleted behind the admin's back
    time.sleep(0)  # (no waiting needed: every step above is synchronous)
    get_driver(host_a.uri).undefine(str(vm.uuid))
    job_ok(services.vm_delete(actor=alice, via="cli", vm=vm))


# --- the doors, on libvirt's test driver --------------------------------------------------------------

@pytest.fixture
def door_vm(test_host, alice):
    """A running VM on the test host, and a second host of its cluster whose libvirtd cannot be reached."""
    from django.db import transaction

    result = services.vm_create(actor=alice, via="cli", name="door-1", vcpus=1, memory_mib=128, disk_gib=1)
    job_ok(result)
    with transaction.atomic():
        other = Host.objects.create(name="other", uri="qemu+tcp://127.0.0.1:1/system", status="up",
                                    cluster=test_host.cluster, memory_mib=8192, cpus=4)
        StoragePool.objects.create(host=other, name=settings.STORAGE_POOL, path="/nonexistent/pool")
    return VM.objects.get(pk=result.vm.pk), other


@pytest.mark.django_db(transaction=True)
def test_api_migrate_refuses_users_unknown_hosts_and_stopped_vms_and_a_failed_job_keeps_the_vm(
        door_vm, alice, admin_user, client_for, test_host):
    vm, other = door_vm
    url = f"/api/vms/{vm.pk}/migrate/"
    response = client_for(alice).post(url, {"host": "other"}, format="json")
    assert response.status_code == 403, response.content
    admin = client_for(admin_user)
    response = admin.post(url, {"host": "no-such-host"}, format="json")
    assert response.status_code == 400 and "Unknown host" in response.json()["detail"]
    response = admin.post(url, {"host": str(test_host.pk)}, format="json")
    assert response.status_code == 400  # its own host

    # Accepted; the job fails (the destination cannot be reached) and the VM stays running on its host.
    response = admin.post(url, {"host": "other", "reason": "test"}, format="json")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["job"]["id"])
    assert job.kind == "vm.migrate" and job.status == "failed"
    assert job.params["target_host_id"] == other.pk and job.params["source_host_id"] == test_host.pk
    vm.refresh_from_db()
    assert vm.host_id == test_host.pk and vm.status == VMStatus.RUNNING and "Migration to other failed" in vm.last_error
    assert get_driver(test_host.uri).domain_info(str(vm.uuid)).state == PowerState.RUNNING
    assert not Volume.objects.filter(pool__host=other).exists()
    assert AuditEvent.objects.filter(action="vm.migrate", outcome="failed", target_id=str(vm.pk)).exists()

    job_ok(services.vm_force_off(actor=alice, via="cli", vm=vm))
    response = admin.post(url, {}, format="json")
    assert response.status_code == 409 and "running or paused" in response.json()["detail"]
    schema = admin.get("/api/schema/").content.decode()
    assert "/api/vms/{id}/migrate/" in schema


@pytest.mark.django_db(transaction=True)
def test_admin_cli_slack_and_web_doors_reach_the_service(door_vm, alice, admin_user, client_for):
    from io import StringIO

    from django.core.management import CommandError, call_command
    from django.test import Client
    from django.urls import reverse

    from chatops import commands as c

    def signed_in(user):
        web = Client()
        web.force_login(user)
        return web

    vm, other = door_vm
    # Django admin: "Migrate to the best host" (the job fails: the only other host is unreachable).
    client = signed_in(admin_user)
    response = client.post(reverse("admin:vms_vm_changelist"),
                           {"action": "migrate_best_host", "_selected_action": [str(vm.pk)]}, follow=True)
    messages = [str(m) for m in response.context["messages"]]
    assert Job.objects.filter(kind="vm.migrate").exists(), messages
    job = Job.objects.filter(kind="vm.migrate").latest("created_at")
    assert job.via == "admin" and job.params["target_host_id"] == other.pk and job.status == "failed"
    vm.refresh_from_db()
    assert vm.status == VMStatus.RUNNING

    # CLI: users are refused; administrators name the host.
    with pytest.raises(CommandError, match="Only administrators"):
        call_command("vm", "--user", "alice", "migrate", "door-1", "--host", "other", stdout=StringIO())
    out = StringIO()
    call_command("vm", "--user", admin_user.username, "migrate", "door-1", "--host", "other", stdout=out)
    assert "Migrating door-1 to other" in out.getvalue()

    # Slack: the command parses (the handler calls the same service).
    assert c.parse("migrate door-1 other") == c.Migrate(name="door-1", host="other")
    assert c.parse("migrate door-1") == c.Migrate(name="door-1", host=None)
    with pytest.raises(c.ParseError):
        c.parse("migrate")

    # Web: administrators see the control (with the other host); users do not.
    page = client.get(reverse("vms:detail", args=[vm.pk])).content.decode()
    assert 'id="migrate"' in page and ">other (" in page
    assert 'id="migrate"' not in signed_in(alice).get(reverse("vms:detail", args=[vm.pk])).content.decode()
    response = client.post(reverse("vms:migrate", args=[vm.pk]), {"host": str(other.pk)})
    assert response.status_code == 302
    assert Job.objects.filter(kind="vm.migrate", via="web").exists()
    jobs = Job.objects.filter(kind="vm.migrate").count()
    signed_in(alice).post(reverse("vms:migrate", args=[vm.pk]), {})  # refused (the page says so)
    assert Job.objects.filter(kind="vm.migrate").count() == jobs
