"""Fresh-user trial of issue #11, backup findings 2 3 4 7 8 10, on libvirt's test driver: a restore is
to a new VM or in place, never both; a schedule's PUT keeps what it is not given and a new interval moves
the next run; a pull backup shows each disk's NBD URI while it is read; pull backups offer no restore;
backups of a deleted VM point at no VM; file-less backups (failed, pull) block no deletion."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from backups import services
from backups.models import Backup, BackupSchedule
from backups.selectors import backup_pool_users
from portal.exceptions import Conflict, ValidationFailed
from portal.hypervisor import get_driver
from portal.models import Job
from vms import services as vm_services
from vms.models import VM

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _clean_backup_pool():
    from backups import doors

    doors.register()
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


@pytest.fixture
def vm(test_host, alice):
    result = vm_services.vm_create(actor=alice, via="cli", name="web-1", vcpus=1, memory_mib=128, disk_gib=1)
    job_ok(result.job)
    return VM.objects.get(pk=result.vm.pk)


def backup(user, vm, **kw):
    b, job, _ = services.backup_create(actor=user, via="cli", vm=vm, **kw)
    job_ok(job)
    b.refresh_from_db()
    return b


# --- 2: a new name or in place, not both ----------------------------------------------------------------

def test_restore_refuses_a_name_and_in_place_together(client_for, alice, vm):
    full = backup(alice, vm, kind="full")
    with pytest.raises(ValidationFailed, match="not both"):
        services.backup_restore(actor=alice, via="cli", backup=full, name="x", in_place=True)
    answer = client_for(alice).post(f"/api/backups/{full.pk}/restore/", {"name": "x", "in_place": True}, format="json")
    assert answer.status_code == 400, answer.content
    assert VM.objects.count() == 1 and not Job.objects.filter(kind="backup.restore").exists()


# --- 3: schedules: omitted fields stay, a new interval moves the next run ------------------------------

def test_schedule_put_keeps_omitted_fields_and_a_new_interval_moves_the_next_run(client_for, alice, vm):
    api = client_for(alice)
    url = f"/api/vms/{vm.pk}/backup-schedule/"
    assert api.put(url, {"interval_hours": 24, "incrementals": 3, "keep_chains": 5, "enabled": False},
                   format="json").status_code == 200
    last = timezone.now() - timedelta(hours=2)
    BackupSchedule.objects.filter(vm=vm).update(last_run_at=last, next_run_at=last + timedelta(hours=24))
    kept = api.put(url, {}, format="json").json()
    assert (kept["interval_hours"], kept["incrementals"], kept["keep_chains"], kept["enabled"]) == (24, 3, 5, False)
    assert BackupSchedule.objects.get(vm=vm).next_run_at == last + timedelta(hours=24)
    # Every 4 h now: the next run is the last one plus 4 h, not the old 24 h.
    moved = api.put(url, {"interval_hours": 4}, format="json").json()
    assert (moved["interval_hours"], moved["incrementals"], moved["keep_chains"]) == (4, 3, 5)
    assert BackupSchedule.objects.get(vm=vm).next_run_at == last + timedelta(hours=4)
    # Every hour, last run 2 h ago: due now.
    before = timezone.now()
    services.backup_schedule_set(actor=alice, via="cli", vm=vm, interval_hours=1)
    assert before <= BackupSchedule.objects.get(vm=vm).next_run_at <= timezone.now()


# --- 4 and 7: a pull backup's disks show their NBD URI while read; it offers no restore ------------------

def test_pull_backup_shows_disk_nbd_uris_while_read_and_offers_no_restore(client, client_for, alice, vm):
    api = client_for(alice)
    pull = backup(alice, vm, mode="pull")
    body = api.get(f"/api/backups/{pull.pk}/").json()
    assert body["disks"][0]["target"] == "vda" and body["disks"][0]["nbd_uri"].startswith("nbd://")
    assert body["restore_url"] is None
    job_ok(services.backup_finish(actor=alice, via="cli", backup=pull)[1])
    body = api.get(f"/api/backups/{pull.pk}/").json()
    assert body["status"] == "ready" and "nbd_uri" not in body["disks"][0] and body["nbd_uri"] == ""
    with pytest.raises(Conflict, match="is a pull backup"):
        services.backup_restore(actor=alice, via="cli", backup=pull, name="again")
    client.force_login(alice)
    for page in ("/backups/", f"/backups/vm/{vm.pk}/"):
        html = client.get(page).content.decode()
        assert f'data-backup="{pull.pk}"' in html
        assert f"/backups/{pull.pk}/restore/" not in html, page


# --- 8: a deleted VM's backups point at no VM ----------------------------------------------------------

def test_backups_of_a_soft_deleted_vm_have_no_vm(client_for, alice, vm):
    full = backup(alice, vm, kind="full")
    VM.objects.filter(pk=vm.pk).update(status="deleted")
    body = client_for(alice).get(f"/api/backups/{full.pk}/").json()
    assert body["vm"] is None and body["vm_url"] is None and body["vm_name"] == "web-1"


# --- 10: failed and pull backups hold no files: they block nothing -------------------------------------

def test_pull_and_failed_backups_do_not_block_deletes(alice, vm, settings):
    full = backup(alice, vm, kind="full")
    pool = full.pool
    pull = backup(alice, vm, mode="pull")
    assert pull.parent_id == full.pk
    job_ok(services.backup_finish(actor=alice, via="cli", backup=pull)[1])
    stale = VM.objects.get(pk=vm.pk)
    other = backup(alice, stale, mode="pull")
    Backup.objects.filter(pk=other.pk).update(started_at=timezone.now() - timedelta(
        seconds=settings.BACKUP_PULL_TIMEOUT_SECONDS + 60))
    from backups.jobs import backups_housekeeping

    backups_housekeeping()
    assert Backup.objects.get(pk=other.pk).status == "failed"
    assert backup_pool_users(pool) == [f"backup {full.pk} of web-1"]  # not the pull nor the failed one
    # The finished pull incremental does not keep its push parent.
    job_ok(services.backup_delete(actor=alice, via="cli", backup=full)[1])
    assert not Backup.objects.filter(pk=full.pk).exists()
    assert Backup.objects.get(pk=pull.pk).parent_id is None
    assert backup_pool_users(pool) == []
