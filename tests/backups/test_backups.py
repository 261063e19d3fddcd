"""Backups through the services on libvirt's test driver (its backup job is simulated by the gateway):
kinds, chains, refusals, delete rules, restore, schedules and retention, and the backup quota."""

from __future__ import annotations

import pytest
from django.conf import settings

from backups import services
from backups.jobs import backups_housekeeping, chain_json
from backups.models import Backup, BackupSchedule
from backups.selectors import backup_chain, backup_get, backups_visible
from portal.exceptions import Conflict, InvalidState, NotFound, QuotaExceeded, ValidationFailed
from portal.hypervisor import get_driver
from portal.models import Job
from quotas.models import Quota
from quotas.selectors import quota_usage
from vms import services as vm_services
from vms.models import VM

pytestmark = pytest.mark.django_db(transaction=True)


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


def make_vm(user, name="web-1"):
    result = vm_services.vm_create(actor=user, via="cli", name=name, vcpus=1, memory_mib=128, disk_gib=1)
    job_ok(result.job)
    return VM.objects.get(pk=result.vm.pk)


def job_ok(job):
    job = Job.objects.get(pk=job.pk)
    assert job.status == "succeeded", f"{job.kind}: {job.status} {job.error}"
    return job


def backup(user, vm, **kw):
    b, job, _ = services.backup_create(actor=user, via="cli", vm=vm, **kw)
    job_ok(job)
    b.refresh_from_db()
    return b


def test_full_then_incremental_chain_and_quota_by_real_size(test_host, alice):
    vm = make_vm(alice)
    full = backup(alice, vm)
    assert (full.kind, full.status, full.progress) == ("full", "ready", 100)
    assert full.pool.content == "backup" and full.checkpoint
    assert full.checkpoint in get_driver(test_host.uri).list_checkpoints(str(vm.uuid))
    inc = backup(alice, vm, kind="auto")
    assert inc.kind == "incremental" and inc.parent_id == full.pk
    inc2 = backup(alice, vm, kind="incremental")
    assert backup_chain(inc2) == [full, inc, inc2]
    usage = {u.resource: u.used for u in quota_usage(user=alice)}
    assert usage["backup_gib"] == -(-sum(b.size_bytes for b in (full, inc, inc2)) // 1024**3)
    assert backup_get(actor=alice, key=str(inc.uuid)) == inc


def test_stopped_vm_is_copied_in_full_and_the_next_backup_is_full(test_host, alice):
    vm = make_vm(alice)
    backup(alice, vm)
    job_ok(vm_services.vm_force_off(actor=alice, via="cli", vm=vm).job)
    with pytest.raises(Conflict, match="stopped"):
        services.backup_create(actor=alice, via="cli", vm=vm, kind="incremental")
    copy = backup(alice, vm, kind="auto")
    assert copy.kind == "full" and not copy.checkpoint
    job_ok(vm_services.vm_start(actor=alice, via="cli", vm=vm).job)
    with pytest.raises(Conflict, match="no checkpoint"):
        services.backup_create(actor=alice, via="cli", vm=vm, kind="incremental")
    assert backup(alice, vm).kind == "full"


def test_lost_checkpoint_makes_the_next_backup_full(test_host, alice):
    vm = make_vm(alice)
    backup(alice, vm)
    get_driver(test_host.uri).checkpoints_drop(str(vm.uuid))
    with pytest.raises(Conflict, match="checkpoint"):
        services.backup_create(actor=alice, via="cli", vm=vm, kind="incremental")
    assert backup(alice, vm).kind == "full"


@pytest.mark.parametrize("field,kw", [("kind", {"kind": "weekly"}), ("mode", {"mode": "ftp"}),
                                      ("note", {"note": "x" * 201})])
def test_bad_input_is_refused_and_nothing_is_made(test_host, alice, field, kw):
    vm = make_vm(alice)
    with pytest.raises(ValidationFailed) as err:
        services.backup_create(actor=alice, via="cli", vm=vm, **kw)
    assert field in err.value.errors and not Backup.objects.exists()


def test_other_users_cannot_back_up_or_see(test_host, alice, bob):
    vm = make_vm(alice)
    with pytest.raises(NotFound):
        services.backup_create(actor=bob, via="cli", vm=vm)
    b = backup(alice, vm)
    assert not backups_visible(bob).exists()
    with pytest.raises(NotFound):
        services.backup_delete(actor=bob, via="cli", backup=b.pk)


def test_quota_refuses_a_backup_that_does_not_fit(test_host, alice):
    vm = make_vm(alice)
    Quota.objects.filter(user=alice).update(max_backup_gib=0)
    with pytest.raises(QuotaExceeded):
        services.backup_create(actor=alice, via="cli", vm=vm)
    assert not Backup.objects.exists()


def test_delete_refused_while_an_incremental_depends_on_it_then_tail_first(test_host, alice):
    vm = make_vm(alice)
    full = backup(alice, vm)
    inc = backup(alice, vm)
    with pytest.raises(Conflict, match=f"incremental backup\\(s\\) {inc.pk}"):
        services.backup_delete(actor=alice, via="cli", backup=full)
    job_ok(services.backup_delete(actor=alice, via="cli", backup=inc)[1])
    assert inc.checkpoint not in get_driver(test_host.uri).list_checkpoints(str(vm.uuid))
    job_ok(services.backup_delete(actor=alice, via="cli", backup=full)[1])
    assert not Backup.objects.exists()
    assert not get_driver(test_host.uri).list_volumes(pool=settings.BACKUP_POOL)


def test_restore_to_a_new_vm_and_in_place(test_host, alice):
    vm = make_vm(alice)
    full = backup(alice, vm)
    inc = backup(alice, vm)
    new, job, _ = services.backup_restore(actor=alice, via="cli", backup=inc, name="web-restored")
    job_ok(job)
    new.refresh_from_db()
    assert new.status == "stopped" and (new.vcpus, new.memory_mib, new.disk_gib) == (1, 128, 1)
    assert new.image_id == vm.image_id
    assert job.params["chain"] == [full.pk, inc.pk]
    with pytest.raises(InvalidState, match="Stop"):
        services.backup_restore(actor=alice, via="cli", backup=inc, in_place=True)
    job_ok(vm_services.vm_force_off(actor=alice, via="cli", vm=vm).job)
    _, job, _ = services.backup_restore(actor=alice, via="cli", backup=full, in_place=True)
    job_ok(job)
    assert get_driver(test_host.uri).list_checkpoints(str(vm.uuid)) == []


def test_broken_chain_is_refused_and_nothing_is_made(test_host, alice):
    vm = make_vm(alice)
    full = backup(alice, vm)
    inc = backup(alice, vm)
    get_driver(test_host.uri).delete_volume(pool=settings.BACKUP_POOL, name=full.disks[0]["volume"])
    vms_before = VM.objects.count()
    with pytest.raises(Conflict, match="broken"):
        services.backup_restore(actor=alice, via="cli", backup=inc, name="from-broken")
    Backup.objects.filter(pk=full.pk).update(status=Backup.Status.FAILED)
    with pytest.raises(Conflict, match="broken"):
        services.backup_restore(actor=alice, via="cli", backup=inc, name="from-broken")
    assert VM.objects.count() == vms_before


def test_pull_backup_exports_until_finished(test_host, alice):
    vm = make_vm(alice)
    b = backup(alice, vm, mode="pull")
    assert b.status == "running" and b.nbd_uri.startswith("nbd://127.0.0.1:")
    with pytest.raises(InvalidState, match="under way"):
        services.backup_create(actor=alice, via="cli", vm=vm)
    with pytest.raises(InvalidState, match="finish it first"):
        services.backup_delete(actor=alice, via="cli", backup=b)
    job_ok(services.backup_finish(actor=alice, via="cli", backup=b)[1])
    b.refresh_from_db()
    assert b.status == "ready" and not b.nbd_uri
    with pytest.raises(Conflict, match="no files"):
        services.backup_restore(actor=alice, via="cli", backup=b, name="x")


def test_schedule_runs_full_then_incrementals_and_keeps_chains(test_host, alice):
    vm = make_vm(alice)
    with pytest.raises(ValidationFailed):
        services.backup_schedule_set(actor=alice, via="cli", vm=vm, interval_hours=0)
    schedule = services.backup_schedule_set(actor=alice, via="cli", vm=vm, interval_hours=1, incrementals=1,
                                            keep_chains=1)
    kinds = []
    for _ in range(4):
        BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at=None)
        BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at="2000-01-01T00:00:00Z")
        assert backups_housekeeping()["started"] == 1
        kinds.append(Backup.objects.filter(vm=vm).order_by("-id").first().kind)
    assert kinds == ["full", "incremental", "full", "incremental"]
    backups_housekeeping()  # retention: only the newest chain is kept
    left = list(Backup.objects.filter(vm=vm).order_by("id").values_list("kind", flat=True))
    assert left == ["full", "incremental"]
    services.backup_schedule_remove(actor=alice, via="cli", vm=vm)
    assert not BackupSchedule.objects.exists() and Backup.objects.filter(vm=vm).count() == 2


def test_chain_json_reads_each_incremental_over_its_parent():
    spec = chain_json(["/b/full.qcow2", "/b/inc1.qcow2", "/b/inc2.qcow2"])
    assert spec.startswith("json:")
    assert '"filename": "/b/inc2.qcow2"' in spec.split('"backing"')[0]
