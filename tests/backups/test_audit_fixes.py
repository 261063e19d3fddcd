"""Issue #11 audit: the backup storage domain an administrator adds is where backups go, and it is not removed
while it holds them (the real backups registration, not a stand-in); a data domain cannot take the backup
domain's name; the web Backups panel's forms (back up now, schedule, restore, delete) reach the services."""

from __future__ import annotations

import uuid

import pytest

from backups import services
from backups.models import Backup, BackupSchedule
from portal.choices import Via
from portal.exceptions import Conflict, ValidationFailed
from portal.hypervisor import get_driver
from portal.models import Job
from storage.domains import domain_add, domain_remove
from storage.models import StoragePool
from storage.services import pool_add
from vms import services as vm_services
from vms.models import VM

pytestmark = pytest.mark.django_db(transaction=True)

Kind, Content = StoragePool.Kind, StoragePool.Content


@pytest.fixture
def backup_domain_name(settings, test_host):
    """A backup domain name of this test's own (the test driver keeps its pools for the whole process)."""
    name = f"bk-{uuid.uuid4().hex[:8]}"
    settings.BACKUP_POOL = name
    settings.BACKUP_DIR = f"/srv/{name}-default"
    yield name
    driver = get_driver(test_host.uri)
    try:
        for v in driver.list_volumes(pool=name):
            driver.delete_volume(pool=name, name=v.name)
        driver.remove_pool(name)
    except Exception:
        pass


def job_ok(job):
    job = Job.objects.get(pk=job.pk)
    assert job.status == "succeeded", f"{job.kind}: {job.status} {job.error}"
    return job


def make_vm(user, name="web-1"):
    result = vm_services.vm_create(actor=user, via=Via.CLI, name=name, vcpus=1, memory_mib=128, disk_gib=1)
    job_ok(result.job)
    return VM.objects.get(pk=result.vm.pk)


def test_an_administrators_backup_domain_holds_the_backups_and_stays_while_it_does(
        test_host, admin_user, alice, backup_domain_name):
    name = backup_domain_name
    path = f"/srv/{name}-shared"
    [pool] = domain_add(actor=admin_user, via=Via.CLI, name=name, kind=Kind.SHARED, hosts=[test_host], path=path,
                        content=Content.BACKUP)
    vm = make_vm(alice)
    backup, job, _ = services.backup_create(actor=alice, via=Via.CLI, vm=vm)
    job_ok(job)
    backup.refresh_from_db()
    assert backup.status == "ready" and backup.pool_id == pool.pk  # the administrator's domain, not BACKUP_DIR
    assert backup.disks[0]["path"].startswith(path + "/")
    assert backup.disks[0]["volume"] in {v.name for v in get_driver(test_host.uri).list_volumes(pool=name)}
    assert StoragePool.objects.filter(name=name).count() == 1  # no second row at BACKUP_DIR

    with pytest.raises(Conflict, match=f"backup {backup.pk} of web-1"):
        domain_remove(actor=admin_user, via=Via.CLI, name=name)
    job_ok(services.backup_delete(actor=alice, via=Via.CLI, backup=backup)[1])
    assert domain_remove(actor=admin_user, via=Via.CLI, name=name) == 1


def test_a_data_domain_cannot_take_the_backup_domains_name(test_host, admin_user, backup_domain_name):
    with pytest.raises(ValidationFailed) as info:
        domain_add(actor=admin_user, via=Via.CLI, name=backup_domain_name, kind=Kind.DIR, hosts=[test_host],
                   path=f"/srv/{backup_domain_name}-data", content=Content.DATA)
    assert "content" in info.value.errors and "backup" in info.value.errors["content"][0]
    with pytest.raises(ValidationFailed) as info:  # nor a plain pool (manage.py pool add HOST NAME PATH)
        pool_add(actor=admin_user, via=Via.CLI, host=test_host, name=backup_domain_name,
                 path=f"/srv/{backup_domain_name}-data")
    assert "name" in info.value.errors and "backup" in info.value.errors["name"][0]
    assert not StoragePool.objects.filter(name=backup_domain_name).exists()


def test_the_backups_panel_forms_reach_the_services(client, alice, test_host, backup_domain_name):
    vm = make_vm(alice)
    client.force_login(alice)

    response = client.post(f"/backups/vm/{vm.pk}/", {"kind": "full", "note": "by hand"})
    assert response.status_code == 302 and response["Location"].endswith(f"/vms/{vm.pk}/#backups")
    backup = Backup.objects.get(vm=vm)
    assert (backup.kind, backup.status, backup.note, backup.created_via) == ("full", "ready", "by hand", "web")

    response = client.post(f"/backups/vm/{vm.pk}/schedule/",
                           {"interval_hours": "12", "incrementals": "3", "keep_chains": "2"})
    assert response.status_code == 302
    schedule = BackupSchedule.objects.get(vm=vm)
    assert (schedule.enabled, schedule.interval_hours, schedule.incrementals, schedule.keep_chains) == (True, 12, 3, 2)
    bad = client.post(f"/backups/vm/{vm.pk}/schedule/", {"interval_hours": "often"}, follow=True)
    assert bad.status_code == 200 and list(bad.context["messages"])
    assert BackupSchedule.objects.get(vm=vm).interval_hours == 12
    client.post(f"/backups/vm/{vm.pk}/schedule/", {"op": "off"})
    assert not BackupSchedule.objects.filter(vm=vm).exists()

    response = client.post(f"/backups/{backup.pk}/restore/", {"name": "web-1-copy"})
    copy = VM.objects.get(name="web-1-copy", owner=alice)
    assert response.status_code == 302 and response["Location"].endswith(f"/vms/{copy.pk}/")
    restore = Job.objects.filter(kind="backup.restore").latest("pk")
    job_ok(restore)

    response = client.post(f"/backups/{backup.pk}/delete/")
    assert response.status_code == 302
    assert not Backup.objects.filter(pk=backup.pk).exists()


def test_a_plain_pool_listed_under_the_backup_domains_name_takes_no_backup(test_host, alice, backup_domain_name):
    # Listed before by hand (manage.py pool add HOST NAME PATH makes a data pool): backups never go among VM disks.
    StoragePool.objects.create(host=test_host, name=backup_domain_name, path=f"/srv/{backup_domain_name}-data",
                               content=Content.DATA)
    vm = make_vm(alice)
    backup, job, _ = services.backup_create(actor=alice, via=Via.CLI, vm=vm)
    job = Job.objects.get(pk=job.pk)
    backup.refresh_from_db()
    assert job.status == "failed" and backup.status == "failed" and backup.pool is None
    assert "holds VM disks, not backups" in backup.last_error


def test_an_external_tool_follows_progress_and_restores_a_stopped_vm_in_place(client_for, alice, test_host,
                                                                              backup_domain_name):
    vm = make_vm(alice)
    api = client_for(alice)
    started = api.post(f"/api/vms/{vm.pk}/backups/", {"kind": "full"}, format="json")
    assert started.status_code == 202, started.content
    backup = api.get(started["Location"]).json()
    assert (backup["status"], backup["progress"]) == ("ready", 100)
    job_ok(vm_services.vm_force_off(actor=alice, via=Via.CLI, vm=vm).job)
    restored = api.post(f"/api/backups/{backup['id']}/restore/", {"in_place": True}, format="json")
    assert restored.status_code == 202, restored.content
    assert restored.json()["vm"]["id"] == vm.pk and VM.objects.filter(owner=alice).count() == 1
    job_ok(Job.objects.filter(kind="backup.restore").latest("pk"))
    assert Job.objects.filter(kind="backup.restore").latest("pk").target_id == str(vm.pk)
