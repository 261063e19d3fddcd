"""VM pools on libvirt's test driver: create and replenish, take and return (stateless reset), the taker's
rights (uses, cannot delete), permissions, an empty pool, concurrent takers (PostgreSQL), and the doors."""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import close_old_connections, connection
from django.urls import reverse

from cluster.housekeeping import housekeeping_run
from pools import services
from pools.models import PoolMember, VMPool
from pools.selectors import pool_list
from portal.exceptions import Conflict, NotFound, PermissionDenied, ValidationFailed
from portal.hypervisor import get_driver
from portal.models import AuditEvent, Job
from quotas.models import Quota
from quotas.selectors import quota_usage
from storage.models import Image
from tests.support import web_client
from vms import services as vm_services
from vms.choices import VMStatus
from vms.disks import vm_disk_add, vm_disk_grow
from vms.leases import vm_lease_extend
from vms.models import VM
from vms.selectors import vm_get, vm_list

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pool_admin(make_user):
    return make_user("pool-admin", staff=True, quota={"max_vms": 10, "max_vcpus": 20, "max_memory_mib": 4096,
                                                      "max_disk_gib": 50})


@pytest.fixture
def students(alice, bob):
    group = Group.objects.create(name="students")
    alice.groups.add(group)
    bob.groups.add(group)
    return group


def make_pool(admin, *, name="lab", prestarted=2, max_size=3, stateless=True, groups=("students",)):
    return services.pool_create(actor=admin, via="cli", name=name, image="test-blank", vcpus=1, memory_mib=64,
                                disk_gib=1, prestarted=prestarted, max_size=max_size, stateless=stateless,
                                groups=groups)


def jobs_ok() -> None:
    bad = list(Job.objects.exclude(status="succeeded").values_list("kind", "status", "error"))
    assert not bad, bad


def test_replenish_keeps_k_free_running_vms_named_after_the_pool_and_never_beyond_max(test_host, pool_admin,
                                                                                     students, alice, bob):
    pool = make_pool(pool_admin)
    assert services.pool_replenish(pool=pool) == ["lab-01", "lab-02"]
    jobs_ok()
    vms = VM.objects.filter(pool_member__pool=pool)
    assert sorted(vms.values_list("name", "status", "owner__username")) == [
        ("lab-01", "running", "pool-admin"), ("lab-02", "running", "pool-admin")]
    assert services.pool_replenish(pool=pool) == []  # K free already
    # Pool VMs charge the pool owner's quota, not the takers'.
    usage = {u.resource: u.used for u in quota_usage(user=pool_admin)}
    assert usage["vms"] == 2
    services.pool_take(actor=alice, via="web", pool="lab")
    assert {u.resource: u.used for u in quota_usage(user=alice)}["vms"] == 0
    # One free left: the housekeeping chore (the monitor leader) makes one more, up to max_size = 3.
    assert housekeeping_run()["pools.replenish"] == {"lab": ["lab-03"]}
    services.pool_take(actor=bob, via="web", pool="lab")
    assert services.pool_replenish(pool=pool) == []  # 3 VMs: the maximum, though only one is free
    jobs_ok()


def test_take_gives_a_running_vm_the_taker_uses_but_cannot_delete_and_return_resets_it(test_host, pool_admin,
                                                                                      students, alice, bob):
    pool = make_pool(pool_admin, prestarted=1)
    services.pool_replenish(pool=pool)
    taken = services.pool_take(actor=alice, via="web", pool="lab")
    vm = taken.vm
    assert vm.status == VMStatus.RUNNING and "yours until you return it" in taken.message
    # Alice sees it and may stop and start it; Bob does not see it.
    assert vm_get(user=alice, vm_id=vm.pk) == vm
    assert list(vm_list(user=bob)) == []
    vm_services.vm_stop(actor=alice, via="web", vm=vm)
    vm_services.vm_start(actor=alice, via="web", vm=vm)
    with pytest.raises(PermissionDenied, match="belongs to pool lab: return it instead"):
        vm_services.vm_delete(actor=alice, via="web", vm=vm)
    with pytest.raises(PermissionDenied, match="cannot be snapshotted"):
        vm_services.snapshot_create(actor=alice, via="web", vm=vm)
    # Asking again gives the same VM; Bob cannot return Alice's.
    assert services.pool_take(actor=alice, via="web", pool="lab").vm == vm
    with pytest.raises(NotFound):
        services.pool_return(actor=bob, via="web", vm=vm)
    disk = vm.disks.get(target="vda").volume
    returned = services.pool_return(actor=alice, via="web", vm=vm)
    assert "reset to its image" in returned.message
    reset = Job.objects.get(kind="vm.reset")
    assert reset.status == "succeeded" and reset.result == {"disks": ["vda"]}
    vm.refresh_from_db()
    assert vm.status == VMStatus.RUNNING
    info = get_driver(test_host.uri).volume_info(pool=disk.pool.name, name=disk.name)
    assert info.backing_path == disk.backing_image.path  # a fresh thin overlay on the image
    assert PoolMember.objects.get(vm=vm).taken_by is None
    with pytest.raises(NotFound):  # returned: no longer hers
        vm_get(user=alice, vm_id=vm.pk)
    jobs_ok()


def test_a_pool_that_keeps_changes_frees_the_vm_without_reset(test_host, pool_admin, students, alice):
    pool = make_pool(pool_admin, prestarted=1, stateless=False)
    services.pool_replenish(pool=pool)
    vm = services.pool_take(actor=alice, via="api", pool=pool).vm
    assert "reset" not in services.pool_return(actor=alice, via="api", vm=vm).message
    assert not Job.objects.filter(kind="vm.reset").exists()


def test_empty_pool_refuses_with_a_clear_error_and_outsiders_do_not_see_it(test_host, pool_admin, students,
                                                                           alice, bob, make_user):
    pool = make_pool(pool_admin, prestarted=1, max_size=1)
    services.pool_replenish(pool=pool)
    services.pool_take(actor=alice, via="web", pool="lab")
    # At its maximum with every VM held, nothing is being started: the answer says to wait for a return.
    with pytest.raises(Conflict, match=r"Pool lab has no free VM: all its VMs are taken \(1, its maximum size\)"):
        services.pool_take(actor=bob, via="web", pool="lab")
    # Below its maximum, the housekeeping pass makes more: then "being started" is true.
    VMPool.objects.filter(pk=pool.pk).update(max_size=2)
    with pytest.raises(Conflict, match="Pool lab has no free VM right now; more are being started"):
        services.pool_take(actor=bob, via="web", pool="lab")
    carol = make_user("carol")
    with pytest.raises(NotFound):
        services.pool_take(actor=carol, via="web", pool="lab")
    assert list(pool_list(user=carol)) == []
    VMPool.objects.filter(pk=pool.pk).update(everyone=True)
    assert [p.name for p in pool_list(user=carol)] == ["lab"]


def test_only_admins_manage_pools_and_delete_refuses_while_taken(test_host, pool_admin, students, alice):
    with pytest.raises(PermissionDenied):
        make_pool(alice)
    with pytest.raises(ValidationFailed, match="cannot exceed"):
        make_pool(pool_admin, prestarted=4, max_size=3)
    pool = make_pool(pool_admin, prestarted=2)
    services.pool_replenish(pool=pool)
    vm = services.pool_take(actor=alice, via="web", pool="lab").vm
    with pytest.raises(Conflict, match="lab-01 taken"):
        services.pool_delete(actor=pool_admin, via="cli", pool=pool)
    services.pool_return(actor=alice, via="web", vm=vm)
    assert services.pool_delete(actor=pool_admin, via="cli", pool=pool) == 2
    assert not VMPool.objects.exists()
    assert set(VM.objects.values_list("status", flat=True)) == {VMStatus.DELETED}
    jobs_ok()


@pytest.mark.postgres
def test_two_users_taking_at_once_get_different_vms(test_host, pool_admin, students, alice, bob):
    assert connection.vendor == "postgresql"
    pool = make_pool(pool_admin, prestarted=2)
    services.pool_replenish(pool=pool)
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def take(user):
        try:
            barrier.wait(timeout=30)
            results[user.username] = services.pool_take(actor=user, via="api", pool="lab").vm.pk
        except BaseException as exc:
            results[user.username] = exc
        finally:
            close_old_connections()

    threads = [threading.Thread(target=take, args=(u,)) for u in (alice, bob)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert isinstance(results["alice"], int) and isinstance(results["bob"], int), results
    assert results["alice"] != results["bob"]
    assert dict(PoolMember.objects.values_list("vm_id", "taken_by__username")) == {
        results["alice"]: "alice", results["bob"]: "bob"}


def test_doors_web_api_cli(test_host, pool_admin, students, alice, client_for, capsys):
    # API: an administrator creates; a user lists, takes, returns; errors are JSON 4xx.
    admin_api, api = client_for(pool_admin), client_for(alice)
    created = admin_api.post("/api/pools/", {"name": "lab", "image": "test-blank", "vcpus": 1, "memory_mib": 64,
                                             "disk_gib": 1, "prestarted": 1, "max_size": 2,
                                             "groups": ["students"]}, format="json")
    assert created.status_code == 201, created.json()
    assert api.post("/api/pools/", {"name": "x", "image": "test-blank"}, format="json").status_code == 403
    empty = api.post("/api/pools/lab/take/")
    assert empty.status_code == 409 and "no free VM" in empty.json()["detail"]
    call_command("vmpool", "--user", "pool-admin", "replenish", "lab")
    assert "lab-01" in capsys.readouterr().out
    listed = api.get("/api/pools/").json()["results"]
    assert [(p["name"], p["free"], p["taken"]) for p in listed] == [("lab", 1, 0)]
    took = api.post("/api/pools/lab/take/")
    assert took.status_code == 200 and took.json()["vm"] == "lab-01"
    vm_id = took.json()["vm_id"]
    assert api.get(f"/api/vms/{vm_id}/").status_code == 200  # hers to use
    assert api.delete(f"/api/vms/{vm_id}/").status_code == 403
    back = api.post("/api/pools/lab/return/", {"vm": str(vm_id)}, format="json")
    assert back.status_code == 200 and "reset" in back.json()["message"]
    assert api.post("/api/pools/lab/return/", {"vm": str(vm_id)}, format="json").status_code == 404
    # Web: the Pools page, Take a VM, the VM page's Pool panel with Return.
    web = web_client(alice)
    page = web.get("/pools/")
    assert page.status_code == 200 and b"Take a VM" in page.content
    taken = web.post("/pools/lab/take/")
    assert taken.status_code == 302 and taken["Location"] == reverse("vms:detail", args=[vm_id])
    detail = web.get(taken["Location"])
    assert b"Return to pool" in detail.content and b'href="#pool"' in detail.content
    assert web.post(f"/pools/vm/{vm_id}/return/").status_code == 302
    assert PoolMember.objects.get(vm_id=vm_id).taken_by is None
    # CLI: take and return.
    call_command("vmpool", "--user", "alice", "take", "lab")
    assert "lab-01" in capsys.readouterr().out
    call_command("vmpool", "--user", "alice", "return", str(vm_id))
    assert "Returned lab-01" in capsys.readouterr().out
    # Admin: the pool with its VMs and counts.
    admin_web = web_client(pool_admin)
    changelist = admin_web.get("/admin/pools/vmpool/")
    assert changelist.status_code == 200 and b"lab" in changelist.content
    change = admin_web.get(f"/admin/pools/vmpool/{VMPool.objects.get().pk}/change/")
    assert change.status_code == 200 and b"lab-01" in change.content
    jobs_ok()


def test_a_quota_that_is_full_stops_replenishing_without_error(test_host, pool_admin, students):
    Quota.objects.filter(user=pool_admin).update(max_vms=1)
    pool = make_pool(pool_admin, prestarted=3, max_size=3)
    assert services.pool_replenish(pool=pool) == ["lab-01"]
    assert services.pool_replenish(pool=pool) == []


def test_admin_creates_a_pool_through_the_service_and_a_refusal_saves_nothing(test_host, pool_admin, students):
    web = web_client(pool_admin)
    image = Image.objects.get(name="test-blank")
    form = {"name": "kiosk", "description": "", "image": image.pk, "flavor": "", "vcpus": "1", "memory_mib": "64",
            "disk_gib": "1", "prestarted": "4", "max_size": "2", "stateless": "on", "owner": pool_admin.pk,
            "groups": [students.pk], "members-TOTAL_FORMS": "0", "members-INITIAL_FORMS": "0",
            "members-MIN_NUM_FORMS": "0", "members-MAX_NUM_FORMS": "1000"}
    refused = web.post("/admin/pools/vmpool/add/", form, follow=True)
    assert b"cannot exceed the pool" in refused.content
    assert not VMPool.objects.exists()
    form["prestarted"] = "1"
    assert web.post("/admin/pools/vmpool/add/", form).status_code == 302
    pool = VMPool.objects.get()
    assert (pool.name, pool.max_size, [g.name for g in pool.groups.all()]) == ("kiosk", 2, ["students"])
    assert AuditEvent.objects.filter(action="pool.create", via="admin", target_name="kiosk").exists()


def test_replenish_starts_a_free_vm_found_stopped(test_host, pool_admin, students):
    pool = make_pool(pool_admin, prestarted=1, max_size=1)
    services.pool_replenish(pool=pool)
    vm = VM.objects.get(name="lab-01")
    vm_services.vm_stop(actor=pool_admin, via="cli", vm=vm)
    assert VM.objects.get(pk=vm.pk).status == VMStatus.STOPPED
    assert services.pool_replenish(pool=pool) == []
    assert VM.objects.get(pk=vm.pk).status == VMStatus.RUNNING
    jobs_ok()


def test_a_taker_cannot_rename_grow_or_lease_a_pool_vm(test_host, pool_admin, students, alice, client_for,
                                                       make_network):
    """What a taker changes the next taker would inherit (a reset only remakes the disk): the name, the disk size
    (charged to the pool owner's quota) and a lease stay the pool's; the owner may still change them."""
    pool = make_pool(pool_admin, prestarted=1)
    services.pool_replenish(pool=pool)
    vm = services.pool_take(actor=alice, via="web", pool="lab").vm
    with pytest.raises(PermissionDenied, match="keep the name"):
        vm_services.vm_update(actor=alice, via="web", vm=vm, name="mine")
    with pytest.raises(PermissionDenied, match="keep the name"):
        vm_services.vm_update(actor=alice, via="web", vm=vm, description="my box")
    with pytest.raises(PermissionDenied, match="keeps the pool's size"):
        vm_services.vm_grow_disk(actor=alice, via="web", vm=vm, disk_gib=3)
    with pytest.raises(PermissionDenied, match="no lease of yours"):
        vm_lease_extend(actor=alice, via="web", vm=vm, days=7)
    # Nor add data disks (the pool owner's quota) or NICs that the next taker would find (trial of issue #14).
    with pytest.raises(PermissionDenied, match="disks stay as the pool made them"):
        vm_disk_add(actor=alice, via="web", vm=vm, size_gib=1)
    with pytest.raises(PermissionDenied, match="disks stay as the pool made them"):
        vm_disk_grow(actor=alice, via="web", vm=vm, disk="vda", size_gib=3)
    with pytest.raises(PermissionDenied, match="network cards stay"):
        vm_services.vm_nic_add(actor=alice, via="web", vm=vm, network=make_network(is_public=True).name)
    assert vm.disks.count() == 1 and not vm.nics.exists()
    api = client_for(alice)
    r = api.patch(f"/api/vms/{vm.pk}/", {"name": "mine"}, format="json")
    assert r.status_code == 403 and "keep the name" in r.json()["detail"]
    r = api.post(f"/api/vms/{vm.pk}/disks/", {"size_gib": 1}, format="json")
    assert r.status_code == 403 and "disks stay" in r.json()["detail"]
    r = api.post(f"/api/vms/{vm.pk}/extend/", {"days": 7}, format="json")
    assert r.status_code == 403
    vm.refresh_from_db()
    assert (vm.name, vm.disk_gib, vm.expires_at) == ("lab-01", 1, None)
    # Not asking for a change is no change: the same name passes.
    vm_services.vm_update(actor=alice, via="web", vm=vm, name="lab-01")
    assert vm_services.vm_update(actor=pool_admin, via="web", vm=vm, description="spare").description == "spare"
