"""Snapshot space counts against the disk quota (libvirt's test driver: no files to measure, so a
snapshot keeps the estimate reserved for it; the measurement itself is proven in test_properties_qemu)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command

from portal.exceptions import QuotaExceeded
from portal.hypervisor import get_driver
from portal.models import Job
from quotas.models import Quota
from quotas.selectors import quota_usage
from vms import services
from vms.models import Snapshot
from vms.selectors import snapshot_space_gib, vm_quota_usage

pytestmark = pytest.mark.django_db(transaction=True)
GIB = 1024**3


def make_vm(user, name="web-1", **kw):
    vm = services.vm_create(actor=user, via="cli", name=name, vcpus=1, memory_mib=128, disk_gib=1, **kw).vm
    vm.refresh_from_db()  # the create job ran on commit: it runs
    assert vm.status == "running"
    return vm


def job_ok(job):
    job = Job.objects.get(pk=job.pk)
    assert job.status == "succeeded", f"{job.kind}: {job.status} {job.error}"


def test_snapshots_add_their_space_rounded_up_per_subject_to_disk_use(test_host, alice):
    team = Group.objects.create(name="team-s")
    alice.groups.add(team)
    Quota.objects.create(group=team, max_vms=3, max_vcpus=4, max_memory_mib=2048, max_disk_gib=20)
    own, other = make_vm(alice), make_vm(alice, name="web-2")
    teams = make_vm(alice, name="team-1", group=team)
    Snapshot.objects.create(vm=own, name="a", size_bytes=GIB + GIB // 2)
    Snapshot.objects.create(vm=other, name="b", size_bytes=GIB // 10)  # 1.6 GiB together: 2 GiB
    Snapshot.objects.create(vm=teams, name="c", size_bytes=1)
    assert snapshot_space_gib(user=alice) == 2 and snapshot_space_gib(group=team) == 1
    assert vm_quota_usage(user=alice)["disk_gib"] == 2 + 2  # two 1 GiB disks and their snapshots
    assert vm_quota_usage(group=team)["disk_gib"] == 1 + 1
    disk = {u.resource: u for u in quota_usage(user=alice)}["disk_gib"]
    assert disk.used == 4


def test_a_snapshot_beyond_the_disk_quota_is_refused_and_nothing_is_made(test_host, alice):
    vm = make_vm(alice)
    estimate = services.snapshot_space_estimate(vm)
    assert estimate >= 128 * 1024**2  # the running VM's memory at least
    need = -(-estimate // GIB)
    Quota.objects.filter(user=alice).update(max_disk_gib=1 + need - 1)  # one GiB short
    with pytest.raises(QuotaExceeded) as err:
        services.snapshot_create(actor=alice, via="api", vm=vm, name="big")
    assert "A snapshot of web-1 counts against the disk quota (its memory and its disks' data" in err.value.message
    assert not Snapshot.objects.exists() and get_driver(test_host.uri).list_snapshots(str(vm.uuid)) == []
    Quota.objects.filter(user=alice).update(max_disk_gib=1 + need)  # exactly enough
    snapshot, job, _ = services.snapshot_create(actor=alice, via="api", vm=vm, name="fits")
    job_ok(job)
    snapshot.refresh_from_db()
    assert snapshot.size_bytes == estimate  # nothing to measure on the test driver: the estimate stays
    assert vm_quota_usage(user=alice)["disk_gib"] == 1 + need
    with pytest.raises(QuotaExceeded):  # the quota is full now
        services.snapshot_create(actor=alice, via="api", vm=vm, name="second")


def test_a_stopped_vm_s_snapshot_reserves_its_disks_only(test_host, alice):
    vm = make_vm(alice)
    running = services.snapshot_space_estimate(vm)
    job_ok(services.vm_force_off(actor=alice, via="cli", vm=vm).job)
    vm.refresh_from_db()
    assert services.snapshot_space_estimate(vm) == running - 128 * 1024**2


def test_the_snapshot_lists_show_the_space(test_host, alice, client_for):
    vm = make_vm(alice)
    Snapshot.objects.create(vm=vm, name="s1", size_bytes=3 * 1024**2, status="ready")
    body = client_for(alice).get(f"/api/vms/{vm.pk}/snapshots/").json()
    rows = body["results"] if isinstance(body, dict) else body
    assert rows[0]["size_bytes"] == 3 * 1024**2
    out = StringIO()
    call_command("vm", "--user", "alice", "snapshots", "web-1", stdout=out)
    assert "3 MiB" in out.getvalue()
    from django.test import Client

    web = Client()
    web.force_login(alice)
    page = web.get(f"/vms/{vm.pk}/snapshots/")
    assert page.status_code == 200 and b"3 MiB" in page.content
    from chatops.formatting import snapshot_list_reply

    assert "3 MiB" in snapshot_list_reply(vm, list(vm.snapshots.all())).text


def test_each_snapshot_is_charged_only_what_it_adds(test_host, alice):
    """The disks' data pinned by the first snapshot is not charged again by later ones (review finding
    10): on the test driver each snapshot keeps its estimate, which is the memory plus the disks'
    allocation beyond what the VM's snapshots are charged already."""
    vm = make_vm(alice)
    job_ok(services.vm_force_off(actor=alice, via="cli", vm=vm).job)
    vm.refresh_from_db()
    allocated = services.snapshot_space_estimate(vm)  # a stopped VM: its disks' data only
    assert allocated > 0
    for name in ("s1", "s2", "s3"):
        job_ok(services.snapshot_create(actor=alice, via="api", vm=vm, name=name).job)
    sizes = dict(Snapshot.objects.filter(vm=vm).values_list("name", "size_bytes"))
    assert sizes == {"s1": allocated, "s2": 0, "s3": 0}
    assert vm_quota_usage(user=alice)["disk_gib"] == 1 + -(-allocated // GIB)
    job_ok(services.vm_start(actor=alice, via="cli", vm=vm).job)
    vm.refresh_from_db()
    assert services.snapshot_space_estimate(vm) == 128 * 1024**2  # a running VM's next one: its memory
