"""Bulk creation (issue #14) on libvirt's test driver: name patterns and their refusals, the whole batch's
quota (all or nothing, or as many as fit), idempotency keys, and the parent job that follows its children."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from portal import jobs
from portal.choices import JobStatus
from portal.exceptions import IdempotencyKeyReused, PermissionDenied, QuotaExceeded, ValidationFailed
from portal.models import AuditEvent, Job
from vms import bulk
from vms.choices import VMStatus
from vms.models import VM, IdempotencyKey

pytestmark = pytest.mark.django_db(transaction=True)

SIZE = {"vcpus": 1, "memory_mib": 128, "disk_gib": 1}


def make_many(user, count=3, pattern="lab-{n:02}", **kw):
    for k, v in SIZE.items():
        kw.setdefault(k, v)
    return bulk.vm_bulk_create(actor=user, via="cli", count=count, name_pattern=pattern, **kw)


@pytest.mark.parametrize("pattern, count, start, names", [
    ("lab-{n:02}", 3, 1, ["lab-01", "lab-02", "lab-03"]),
    ("lab-{n}", 2, 9, ["lab-9", "lab-10"]),
    ("x{n:03d}y", 1, 0, ["x000y"]),
    ("solo", 1, 1, ["solo"]),
    ("a{{b}}-{n}", 1, 1, ["a{b}-1"]),
])
def test_names_from_a_pattern(pattern, count, start, names):
    assert bulk.bulk_names(pattern, count=count, start_number=start) == names


@pytest.mark.parametrize("pattern, count, message", [
    ("lab", 2, "needs {n}"),
    ("lab-{0}", 2, "the only field is {n}"),
    ("lab-{}", 2, "the only field is {n}"),
    ("lab-{n.real}", 2, "the only field is {n}"),
    ("lab-{n[0]}", 2, "the only field is {n}"),
    ("lab-{x}", 2, "the only field is {n}"),
    ("lab-{n!r}", 2, "integer format"),
    ("lab-{n:s}", 2, "integer format"),
    ("lab-{n:>10}", 2, "integer format"),
    ("lab-{n:{n}}", 2, "integer format"),
    ("lab-{n:999}", 2, "integer format"),
    ("lab-{n", 2, "Invalid name pattern"),
    ("lab-}", 2, "Invalid name pattern"),
    ("", 2, "Name pattern is required"),
])
def test_pattern_refusals(pattern, count, message):
    with pytest.raises(ValidationFailed) as exc:
        bulk.bulk_names(pattern, count=count)
    assert message in exc.value.message
    assert "name_pattern" in exc.value.errors


def test_each_name_follows_the_vm_name_rule(test_host, alice):
    with pytest.raises(ValidationFailed, match="Invalid name 'Lab-1'"):
        make_many(alice, count=2, pattern="Lab-{n}")
    assert not VM.objects.exists() and not Job.objects.exists()


def test_count_limits(test_host, alice):
    with override_settings(BULK_MAX_COUNT=5):
        with pytest.raises(ValidationFailed, match="At most 5 VMs in one request"):
            make_many(alice, count=6)
    for bad in (0, -1, "x", True):
        with pytest.raises(ValidationFailed):
            make_many(alice, count=bad)
    with pytest.raises(ValidationFailed, match="Start number must be at least 0"):
        make_many(alice, count=2, start_number=-1)


def test_three_vms_one_parent_job_that_finishes_with_its_children(test_host, alice):
    result = make_many(alice, count=3)
    assert (result.requested, result.created, result.replayed) == (3, 3, False)
    assert sorted(vm.name for vm in result.vms) == ["lab-01", "lab-02", "lab-03"]
    parent = Job.objects.get(pk=result.job.pk)
    assert parent.kind == "vm.bulk_create"
    assert parent.status == JobStatus.SUCCEEDED and parent.progress == 100
    assert parent.result["succeeded"] == 3 and parent.result["created"] == 3
    children = list(parent.children.all())
    assert len(children) == 3 and {c.kind for c in children} == {"vm.create"}
    assert all(c.status == JobStatus.SUCCEEDED for c in children)
    assert set(VM.objects.values_list("status", flat=True)) == {VMStatus.RUNNING}
    assert AuditEvent.objects.filter(action="vm.bulk_create", job=parent).exists()


def test_clash_with_an_existing_vm_is_refused_up_front(test_host, alice):
    make_many(alice, count=1, pattern="lab-{n:02}", start_number=2)
    with pytest.raises(ValidationFailed, match="You already have VMs named lab-02"):
        make_many(alice, count=3)
    assert VM.objects.count() == 1 and Job.objects.filter(kind="vm.bulk_create").count() == 1


def test_quota_all_or_nothing(test_host, alice):
    # alice: 3 VMs, 4 vCPUs, 2048 MiB, 20 GiB
    make_many(alice, count=1, pattern="old")
    with pytest.raises(QuotaExceeded) as exc:
        make_many(alice, count=3)
    assert "VMs" in exc.value.message and "requested 3" in exc.value.message
    assert VM.objects.count() == 1 and not Job.objects.filter(kind="vm.bulk_create", children__isnull=False)\
        .exclude(result__names=["old"]).exists()


def test_partial_makes_as_many_as_fit_and_says_why(test_host, alice):
    result = make_many(alice, count=5, partial=True, memory_mib=512)  # 4 x 512 MiB fit 2048; 3 VMs max
    assert result.created == 3 and result.requested == 5
    assert "VMs 0 of 3 in use" in result.why_fewer
    assert "Creating 3 of 5 VMs" in result.message
    parent = Job.objects.get(pk=result.job.pk)
    assert parent.status == JobStatus.SUCCEEDED and parent.children.count() == 3
    # Nothing more fits now: a partial request is refused with the quota's own words.
    with pytest.raises(QuotaExceeded):
        make_many(alice, count=2, pattern="more-{n}", partial=True)


def test_partial_limited_by_memory(test_host, alice):
    result = make_many(alice, count=3, partial=True, memory_mib=1024)
    assert result.created == 2 and "Memory" in result.why_fewer


def test_idempotency_replay_and_mismatch(test_host, alice, bob):
    first = make_many(alice, count=2, idempotency_key="class-42")
    again = make_many(alice, count=2, idempotency_key="class-42")
    assert again.replayed and again.job.pk == first.job.pk and again.created == 2
    assert VM.objects.count() == 2 and Job.objects.filter(kind="vm.create").count() == 2
    with pytest.raises(IdempotencyKeyReused, match="different request"):
        make_many(alice, count=3, idempotency_key="class-42")
    # Keys are per user: bob's same key is his own request.
    assert not make_many(bob, count=1, pattern="b-{n}", idempotency_key="class-42").replayed
    # An expired key is forgotten: the request is made again (and refused: the names exist now).
    IdempotencyKey.objects.filter(user=alice).update(created_at=timezone.now() - timedelta(days=2))
    with pytest.raises(ValidationFailed, match="already have VMs named lab-01, lab-02"):
        make_many(alice, count=2, idempotency_key="class-42")
    with pytest.raises(ValidationFailed, match="idempotency key"):
        make_many(alice, count=2, idempotency_key="has space")


def test_refused_request_keeps_no_key(test_host, alice):
    with pytest.raises(QuotaExceeded):
        make_many(alice, count=4, idempotency_key="k1")
    assert not IdempotencyKey.objects.exists()
    assert make_many(alice, count=2, idempotency_key="k1").created == 2


def test_only_admins_create_for_others(test_host, alice, bob, admin_user):
    with pytest.raises(PermissionDenied):
        make_many(alice, count=1, owner=bob)
    result = make_many(admin_user, count=2, owner=bob)
    assert set(VM.objects.values_list("owner__username", flat=True)) == {"bob"}
    assert Job.objects.get(pk=result.job.pk).status == JobStatus.SUCCEEDED


def test_parent_follows_children_and_fails_with_a_summary(test_host, alice, monkeypatch):
    """A child that fails makes the parent fail with a summary; what succeeded is kept."""
    real = jobs.HANDLERS["vm.create"]

    def flaky(ctx):
        vm = VM.objects.get(pk=int(ctx.job.target_id))
        if vm.name == "lab-02":
            raise ValidationFailed("the test refuses lab-02")
        return real.run(ctx)

    monkeypatch.setitem(jobs.HANDLERS, "vm.create", jobs.Handler(flaky, real.on_failure))
    result = make_many(alice, count=3)
    parent = Job.objects.get(pk=result.job.pk)
    assert parent.status == JobStatus.FAILED
    assert "1 of 3 failed (2 succeeded and are kept): lab-02: the test refuses lab-02" in parent.error
    assert parent.result["succeeded"] == 2 and parent.progress == 100
    assert set(VM.objects.exclude(status=VMStatus.DELETED).values_list("name", flat=True)) == {"lab-01", "lab-03"}


def test_parallelism_gate_holds_children_and_wakes_them(test_host, alice, monkeypatch):
    """With BULK_PARALLELISM=1 a second child is held while one runs; the parent's progress moves as children
    finish; the reaper settles a parent whose last announcement was lost."""
    monkeypatch.setitem(jobs.HANDLERS, "vm.create", jobs.Handler(lambda ctx: {}))
    with override_settings(BULK_PARALLELISM=1), jobs.transaction.atomic():
        parent = jobs.job_create_parent(kind="vm.bulk_create", actor=alice, via="cli",
                                        params={"parallelism": 1})
        a = Job.objects.create(kind="vm.create", parent=parent, step="Queued")
        b = Job.objects.create(kind="vm.create", parent=parent, step="Queued")
    Job.objects.filter(pk=a.pk).update(status=JobStatus.RUNNING)
    assert jobs.run_job(b.pk) is None
    b.refresh_from_db()
    assert b.status == JobStatus.PENDING and b.step.startswith("Waiting: this batch has 1 jobs running (at most 1 at once)")
    Job.objects.filter(pk=a.pk).update(status=JobStatus.SUCCEEDED)
    jobs.batch_settle(parent.pk)
    parent.refresh_from_db()
    assert parent.progress == 50 and parent.step == "1 of 2 finished" and parent.status == JobStatus.RUNNING
    assert jobs.run_job(b.pk) == JobStatus.SUCCEEDED  # its end settles the parent (job_finished)
    parent.refresh_from_db()
    assert parent.status == JobStatus.SUCCEEDED and parent.progress == 100
    # A parent still running after its children all finished (announcement lost) is settled by the reaper.
    with jobs.transaction.atomic():
        lost = jobs.job_create_parent(kind="vm.bulk_create", actor=alice, via="cli")
        Job.objects.create(kind="vm.create", parent=lost, status=JobStatus.FAILED, error="boom", target_name="z")
    jobs.jobs_reap_stale()
    lost.refresh_from_db()
    assert lost.status == JobStatus.FAILED and "z: boom" in lost.error
