"""The review of issue #11 (backups, findings 1 2 3 7 8 11 12 13), on libvirt's test driver: a VM under
a backup or restore job is not started or deleted; a failed restore leaves nothing half-made; a restore in
place writes only the disks it backed up; no libvirt text reaches users; pull exports end on a timeout and
are charged; scheduled backups survive a swapped disk; a failed delete keeps the backup's status;
retention keeps what its schedule did not make."""

from __future__ import annotations

import pytest
from django.conf import settings

from backups import services
from backups.jobs import backups_housekeeping
from backups.models import Backup, BackupSchedule
from portal.choices import JobStatus
from portal.exceptions import Conflict, InvalidState
from portal.hypervisor import get_driver
from portal.models import Job
from vms import services as vm_services
from vms.models import VM

pytestmark = pytest.mark.django_db(transaction=True)
GIB = 1024**3


@pytest.fixture(autouse=True)
def _clean_backup_pool():
    yield
    driver = get_driver("test:///default")
    try:
        for v in driver.list_volumes(pool=settings.BACKUP_POOL):
            driver.delete_volume(pool=settings.BACKUP_POOL, name=v.name)
    except Exception:
        pass
    type(driver)._test_checkpoints.clear()


def job_ok(job):
    job = Job.objects.get(pk=job.pk)
    assert job.status == "succeeded", f"{job.kind}: {job.status} {job.error}"
    return job


def make_vm(user, name="web-1"):
    result = vm_services.vm_create(actor=user, via="cli", name=name, vcpus=1, memory_mib=128, disk_gib=1)
    job_ok(result.job)
    return VM.objects.get(pk=result.vm.pk)


def backup(user, vm, **kw):
    b, job, _ = services.backup_create(actor=user, via="cli", vm=vm, **kw)
    job_ok(job)
    b.refresh_from_db()
    return b


# --- 1: a backup or restore job owns the VM's disks -------------------------------------------------

@pytest.mark.parametrize("kind", ["backup.create", "backup.restore"])
def test_vm_is_not_started_or_deleted_while_a_backup_job_is_on_it(test_host, alice, kind):
    vm = make_vm(alice)
    job_ok(vm_services.vm_force_off(actor=alice, via="cli", vm=vm).job)
    pending = Job.objects.create(kind=kind, actor=alice, via="cli", target_type="vm", target_id=str(vm.pk),
                                 target_name=vm.name, status=JobStatus.PENDING)
    with pytest.raises(InvalidState, match="on its disks"):
        vm_services.vm_start(actor=alice, via="cli", vm=vm)
    with pytest.raises(InvalidState, match="on its disks"):
        vm_services.vm_delete(actor=alice, via="cli", vm=vm)
    vm.refresh_from_db()
    assert vm.status == "stopped"
    Job.objects.filter(pk=pending.pk).update(status=JobStatus.SUCCEEDED)
    job_ok(vm_services.vm_start(actor=alice, via="cli", vm=vm).job)


# --- 12: a failed delete keeps the backup's status ----------------------------------------------------

def test_a_failed_backup_whose_delete_fails_stays_failed(test_host, alice, monkeypatch):
    from portal.exceptions import OperationFailed
    from portal.hypervisor.driver import LibvirtDriver

    vm = make_vm(alice)
    b = backup(alice, vm)
    Backup.objects.filter(pk=b.pk).update(status=Backup.Status.FAILED)

    def refuse(self, uuid, name):
        raise OperationFailed("The host refused.", detail="checkpoint delete: boom")

    monkeypatch.setattr(LibvirtDriver, "checkpoint_delete", refuse)
    _, job, _ = services.backup_delete(actor=alice, via="cli", backup=b)
    assert Job.objects.get(pk=job.pk).status == "failed"
    b.refresh_from_db()
    assert b.status == "failed"
    monkeypatch.undo()
    good = backup(alice, vm)
    monkeypatch.setattr(LibvirtDriver, "checkpoint_delete", refuse)
    services.backup_delete(actor=alice, via="cli", backup=good)
    good.refresh_from_db()
    assert good.status == "ready"


# --- 13: retention deletes only what an enabled schedule made ------------------------------------------

def _due(schedule):
    BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at="2000-01-01T00:00:00Z")


def test_retention_keeps_manual_and_pull_backups_and_pauses_with_its_schedule(test_host, alice):
    vm = make_vm(alice)
    manual = backup(alice, vm, kind="full")
    pull = backup(alice, vm, mode="pull")
    job_ok(services.backup_finish(actor=alice, via="cli", backup=pull)[1])
    schedule = services.backup_schedule_set(actor=alice, via="cli", vm=vm, interval_hours=1, incrementals=0,
                                            keep_chains=1)
    for _ in range(2):
        _due(schedule)
        assert backups_housekeeping()["started"] == 1
    scheduled = list(Backup.objects.filter(schedule=schedule).order_by("id"))
    assert len(scheduled) == 1  # the older scheduled chain went
    assert Backup.objects.filter(pk__in=[manual.pk, pull.pk]).count() == 2
    # Paused: its chains stay, however many.
    services.backup_schedule_set(actor=alice, via="cli", vm=vm, enabled=False, interval_hours=1, incrementals=0,
                                 keep_chains=1)
    extra = backup(alice, vm, kind="full", schedule=schedule)
    assert backups_housekeeping()["deleted"] == 0
    assert Backup.objects.filter(pk__in=[scheduled[0].pk, extra.pk]).count() == 2


# --- 7: QEMU's words (host paths) are for administrators only -------------------------------------------

def test_a_failed_backup_tells_users_plain_words_and_admins_the_hypervisors(test_host, alice, monkeypatch):
    from portal.hypervisor import BackupProgress
    from portal.hypervisor.driver import LibvirtDriver

    vm = make_vm(alice)
    raw = "error writing /var/lib/vmportal/backups/secret-vda.qcow2: No space left on device"
    monkeypatch.setattr(LibvirtDriver, "backup_progress",
                        lambda self, uuid: BackupProgress(total=1, processed=0, done=True, error=raw))
    b, job, _ = services.backup_create(actor=alice, via="cli", vm=vm)
    job = Job.objects.get(pk=job.pk)
    b.refresh_from_db()
    assert job.status == "failed" and b.status == "failed"
    for shown in (job.error, b.last_error):
        assert "/var/lib" not in shown and "No space" not in shown and "failed" in shown
    assert raw in job.error_detail  # the administrators' detail


# --- 2: a failed restore leaves nothing half-made -----------------------------------------------------

def _fail_restored_volumes(monkeypatch):
    from portal.exceptions import OperationFailed
    from portal.hypervisor.driver import LibvirtDriver

    real = LibvirtDriver.create_volume

    def create_volume(self, *, pool, name, capacity_bytes, **kw):
        if "-restore-" in name or (self.is_test and getattr(create_volume, "restoring", False)):
            raise OperationFailed("The host ran out of space.", detail=f"create {name}: no space")
        return real(self, pool=pool, name=name, capacity_bytes=capacity_bytes, **kw)

    monkeypatch.setattr(LibvirtDriver, "create_volume", create_volume)
    return create_volume


def test_a_failed_restore_in_place_keeps_the_vms_disks(test_host, alice, monkeypatch):
    vm = make_vm(alice)
    full = backup(alice, vm)
    job_ok(vm_services.vm_force_off(actor=alice, via="cli", vm=vm).job)
    root = vm.disks.get(target="vda").volume
    driver = get_driver(test_host.uri)
    before = {v.name for v in driver.list_volumes(pool=root.pool.name)}
    hook = _fail_restored_volumes(monkeypatch)
    hook.restoring = True  # every volume made from now on fails, whatever its name
    _, job, _ = services.backup_restore(actor=alice, via="cli", backup=full, in_place=True)
    assert Job.objects.get(pk=job.pk).status == "failed"
    assert {v.name for v in driver.list_volumes(pool=root.pool.name)} == before  # the disk is there, no leftover
    root.refresh_from_db()
    assert root.name in before
    monkeypatch.undo()
    _, job, _ = services.backup_restore(actor=alice, via="cli", backup=full, in_place=True)
    job_ok(job)
    old_name = root.name
    root.refresh_from_db()
    names = {v.name for v in driver.list_volumes(pool=root.pool.name)}
    assert "-restore-" in root.name and root.name in names and old_name not in names  # swapped, old file gone
    assert root.path in driver.domain_xml(str(vm.uuid), inactive=True)


def test_a_failed_restore_to_a_new_vm_deletes_that_vm(test_host, alice, monkeypatch):
    vm = make_vm(alice)
    full = backup(alice, vm)
    _fail_restored_volumes(monkeypatch)
    new, job, _ = services.backup_restore(actor=alice, via="cli", backup=full, name="web-back")
    assert Job.objects.get(pk=job.pk).status == "failed"
    new.refresh_from_db()
    assert new.status == "deleted"  # its blank disks went with it: nothing charged
    assert not get_driver(test_host.uri).domain_exists(str(new.uuid))


# --- 3 and 11: a disk swapped at the same target ------------------------------------------------------

def _swap_root(test_host, vm):
    from storage.models import Volume

    name = f"{vm.domain_name}-other.qcow2"
    disk = vm.disks.select_related("volume__pool").get(target="vda")
    get_driver(test_host.uri).create_volume(pool=disk.volume.pool.name, name=name, capacity_bytes=GIB)
    other = Volume.objects.create(pool=disk.volume.pool, name=name, capacity_gib=1)
    vm.disks.filter(pk=disk.pk).update(volume=other)
    return other


def test_restore_in_place_writes_only_the_disks_backed_up(test_host, alice):
    vm = make_vm(alice)
    full = backup(alice, vm)
    job_ok(vm_services.vm_force_off(actor=alice, via="cli", vm=vm).job)
    _swap_root(test_host, vm)
    with pytest.raises(Conflict, match="not the ones backed up"):
        services.backup_restore(actor=alice, via="cli", backup=full, in_place=True)
    assert not Job.objects.filter(kind="backup.restore").exists()


def test_restore_in_place_charges_a_larger_disk(test_host, alice):
    from portal.exceptions import QuotaExceeded
    from quotas.models import Quota

    vm = make_vm(alice)
    full = backup(alice, vm)
    job_ok(vm_services.vm_force_off(actor=alice, via="cli", vm=vm).job)
    disks = [{**d, "capacity_bytes": 50 * GIB} for d in full.disks]  # the backed-up disk was larger
    Backup.objects.filter(pk=full.pk).update(disks=disks)
    Quota.objects.filter(user=alice).update(max_disk_gib=20)
    with pytest.raises(QuotaExceeded):
        services.backup_restore(actor=alice, via="cli", backup=full, in_place=True)


def test_a_swapped_disk_makes_the_next_backup_full_and_a_failed_incremental_too(test_host, alice):
    vm = make_vm(alice)
    backup(alice, vm)
    _swap_root(test_host, vm)
    with pytest.raises(Conflict, match="changed"):
        services.backup_create(actor=alice, via="cli", vm=vm, kind="incremental")
    assert backup(alice, vm).kind == "full"
    # A scheduled incremental that failed in libvirt: the schedule's next one is full.
    schedule = services.backup_schedule_set(actor=alice, via="cli", vm=vm, interval_hours=1, incrementals=5)
    _due(schedule)
    backups_housekeeping()
    inc = Backup.objects.filter(schedule=schedule).get()
    assert inc.kind == "incremental"
    Backup.objects.filter(pk=inc.pk).update(status=Backup.Status.FAILED)
    _due(schedule)
    backups_housekeeping()
    assert Backup.objects.filter(schedule=schedule).order_by("-id").first().kind == "full"


# --- 8: pull exports are charged, get a port of the range, and end on a timeout -------------------------

def test_a_pull_backup_is_charged_while_exported_and_ends_on_its_timeout(test_host, alice, settings):
    from datetime import timedelta

    from django.utils import timezone

    from quotas.selectors import quota_usage

    vm = make_vm(alice)
    pull = backup(alice, vm, mode="pull")
    assert pull.size_bytes >= GIB  # the scratch files' estimate
    assert {u.resource: u.used for u in quota_usage(user=alice)}["backup_gib"] >= 1
    port = int(pull.nbd_uri.split(":")[2].split("/")[0])
    assert settings.BACKUP_NBD_PORT_MIN <= port <= settings.BACKUP_NBD_PORT_MAX
    # The range is the limit: with its only port exported, another VM's pull backup on that host fails.
    settings.BACKUP_NBD_PORT_MIN = settings.BACKUP_NBD_PORT_MAX = port
    other = make_vm(alice, name="web-2")
    b2, job, _ = services.backup_create(actor=alice, via="cli", vm=other, mode="pull")
    assert Job.objects.get(pk=job.pk).status == "failed" and "No NBD port" in Job.objects.get(pk=job.pk).error
    # Not finished in time: the export ends, its checkpoint goes, the backup is failed and counts nothing.
    Backup.objects.filter(pk=pull.pk).update(started_at=timezone.now() - timedelta(
        seconds=settings.BACKUP_PULL_TIMEOUT_SECONDS + 60))
    backups_housekeeping()
    pull.refresh_from_db()
    assert pull.status == "failed" and not pull.nbd_uri and pull.size_bytes == 0 and "not finished" in pull.last_error
    assert pull.checkpoint not in get_driver(test_host.uri).list_checkpoints(str(vm.uuid))
    assert {u.resource: u.used for u in quota_usage(user=alice)}["backup_gib"] == 0
