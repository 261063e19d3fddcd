"""The VM API's fast rows (portal.api_rows.FastRowsMixin on VMSerializer and NicSerializer) answer exactly
what DRF's own per-field path answers: the same bytes for every list page and every VM's detail, for an
owner, a group member and an administrator, in UTC and in another time zone, over VMs in every status, with
and without image, flavor, group, NICs, addresses, CD-ROM, pinned hosts and tags (issue #13)."""

from __future__ import annotations

import datetime

import pytest
from django.urls import NoReverseMatch
from django.utils import timezone
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.reverse import reverse
from rest_framework.test import APIClient

from cluster.models import Host
from portal.api import row_url
from portal.api_rows import FastRowsMixin
from portal.choices import JobStatus, Via
from portal.jobs.api.serializers import JobSummarySerializer
from portal.models import Job
from storage.models import Image
from tests.scale import scale_world
from vms.api.serializers import NicSerializer, VMSerializer
from vms.choices import VMStatus
from vms.models import VM, VMNic

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():

    world = scale_world("fast")
    world.grow(6)  # image, flavor, one NIC with an address each; every other one shared with the group
    other_host = Host.objects.create(name="fast-host-2", uri="test:///fast-2", status="up", cpus=8, memory_mib=8192)
    iso = Image.objects.create(name="fast-iso", title="ISO", pool=world.pool, volume_name="x.iso",
                               path="/nonexistent/fast/x.iso")
    later = timezone.now() + datetime.timedelta(days=3, microseconds=17)
    for i, status in enumerate(VMStatus):
        vm = VM.objects.create(
            name=f"st-{i:02d}", owner=world.owner, group=world.group if i % 3 != 2 else None, host=world.host,
            image=world.image if i % 2 else None, flavor=world.flavor if i % 4 == 1 else None, vcpus=1 + i,
            memory_mib=256 * (i + 1), disk_gib=i, status=status, power_state="" if i % 2 else str(status),
            domain_name=f"fast-{i}", last_error="boom: ünïcode \"quoted\"" if status == VMStatus.ERROR else "",
            description="line 1\nline 2" if i % 5 == 0 else "", cdrom_drive=i % 3 == 1,
            cdrom=iso if i % 6 == 1 else None, highly_available=i % 2 == 0, ha_priority=i * 7,
            required_tags=["ssd", "gpu"] if i % 4 == 0 else [])
        VM.objects.filter(pk=vm.pk).update(status_changed_at=later)
        if i % 4 == 0:
            vm.pinned_hosts.set([world.host, other_host])
        for n in range(i % 3):  # 0, 1 or 2 NICs; some without an address yet
            VMNic.objects.create(vm=vm, network=world.network, mac=f"52:54:00:aa:{i:02x}:{n:02x}",
                                 model=VMNic.Model.E1000 if n else VMNic.Model.VIRTIO,
                                 status=VMNic.Status.ATTACHED if n == 0 else VMNic.Status.ATTACHING,
                                 ip_address=f"10.9.{i}.{n + 2}" if n == 0 and i % 2 else None,
                                 ip_seen_at=later if n == 0 and i % 2 else None,
                                 properties={"boot_order": n + 1} if n else {})
    return world


def _drf_path(monkeypatch) -> None:
    """Every fast serializer renders through DRF's own Serializer.to_representation."""
    monkeypatch.setattr(FastRowsMixin, "to_representation",
                        lambda self, instance: serializers.Serializer.to_representation(self, instance))


def _pages(client: APIClient, world) -> dict[str, bytes]:
    paths = ["/api/vms/", "/api/vms/?page_size=10", "/api/vms/?page_size=10&page=2", "/api/vms/?status=running",
             "/api/vms/?pagination=cursor&page_size=5", "/api/vms/?search=st-"]
    paths += [f"/api/vms/{pk}/" for pk in VM.objects.exclude(status=VMStatus.DELETED).values_list("pk", flat=True)]
    out = {}
    for path in paths:
        response = client.get(path)
        out[path] = (response.status_code, response.content)
    return out


@pytest.mark.parametrize("role", ["owner", "member", "admin"])
@pytest.mark.parametrize("zone", ["UTC", "America/St_Johns"])
def test_list_and_detail_are_byte_for_byte_drf_s(world, monkeypatch, role, zone):
    client = APIClient()
    client.force_authenticate(getattr(world, role))
    with timezone.override(zone):
        fast = _pages(client, world)
        _drf_path(monkeypatch)
        slow = _pages(client, world)
    assert fast.keys() == slow.keys()
    shown = 0
    for path in fast:
        assert fast[path] == slow[path], path
        shown += fast[path][1].count(b'"ssh"')
    assert shown > len(VMStatus)  # the pages did list VMs (every one of them shows its ssh field)
    assert any(status == 200 and b'"ha_priority"' in body for status, body in fast.values()) == (role == "admin")
    assert any(b'"nics":[{' in body for _, body in fast.values())
    assert fast["/api/vms/"][1].count(b'"cdrom":"fast-iso"') == 2  # the list's CD-ROM images (fetched apart)


def test_each_row_equals_the_drf_row_with_the_same_types(world, rf):
    """Row by row, outside a view too (no request: every field, like the schema), a value of the same type."""

    request = Request(rf.get("/api/vms/"))
    request.user = world.admin
    vms = list(VM.objects.prefetch_related("nics__network", "pinned_hosts").order_by("pk"))
    assert len(vms) == 6 + len(VMStatus)
    for context in ({"request": request}, {}):
        fast = VMSerializer(vms, many=True, context=context).data
        plain = VMSerializer(context=context)
        nic_plain = NicSerializer(context=context)
        for vm, row in zip(vms, fast, strict=True):
            expected = serializers.Serializer.to_representation(plain, vm)
            expected["nics"] = [serializers.Serializer.to_representation(nic_plain, nic) for nic in vm.nics.all()]
            assert _typed(row) == _typed(expected), vm.name


def test_a_missing_related_row_falls_back_to_drf(world):
    """A read that raises (here an unsaved VM's NIC manager) is DRF's outcome, not a half-built row."""
    vm = VM(name="unsaved", owner=world.owner, host=world.host, vcpus=1, memory_mib=1, disk_gib=1)
    with pytest.raises(ValueError):  # noqa: PT011 - Django's own message for a manager of an unsaved row
        serializers.Serializer.to_representation(VMSerializer(), vm)
    with pytest.raises(ValueError):  # noqa: PT011
        VMSerializer(vm).data  # noqa: B018


def _typed(value):
    """The value with each leaf's type beside it (True == 1 in Python; not in JSON)."""
    if isinstance(value, dict):
        return {key: _typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_typed(item) for item in value]
    return (type(value).__name__, value)


def test_row_url_s_integer_fast_path_leaves_other_ids_to_reverse(rf):
    """Once a route is cached for integer ids, ids that are not small non-negative ints (a 19-digit id, a digit
    string, a negative id, a bool) still get what reverse() gives: its URL or its error."""


    def outcome(call):
        try:
            return call()
        except NoReverseMatch:
            return NoReverseMatch

    context = {"request": Request(rf.get("/api/vms/"))}
    for pk in [7, 8, 10**18 - 1, 10**18, 12345678901234567890, "42", -1, True, False, 0, 9]:
        assert outcome(lambda pk=pk: row_url(context, "api-vm-detail", pk=pk)) == outcome(
            lambda pk=pk: reverse("api-vm-detail", kwargs={"pk": pk}, request=context["request"])), pk
    assert row_url(context, "api-vm-nic", pk=3, nic_id=4) == "http://testserver/api/vms/3/nics/4/"
    assert row_url(context, "api-vm-nic", nic_id=6, pk=5) == "http://testserver/api/vms/5/nics/6/"


@pytest.mark.parametrize("role", ["owner", "admin"])
def test_job_list_and_detail_are_byte_for_byte_drf_s(world, monkeypatch, role):
    """Jobs (portal.jobs.api.serializers) in every status, with and without actor, target, times, the
    administrators' keys of params and result, and a 19-digit or unknown target."""

    later = timezone.now() + datetime.timedelta(hours=5, microseconds=3)
    vm_id = str(world.vm_ids[0])
    targets = [("vm", vm_id, "vm-000000"), ("", "", ""), ("nothing", "7", "x"), ("vm", "1234567890123456789", "big"),
               ("backup", "5", "b")]
    for i, status in enumerate(JobStatus):
        target_type, target_id, target_name = targets[i % len(targets)]
        Job.objects.create(
            kind=f"vm.kind{i}", status=status, progress=i * 9, step="step ü" if i % 2 else "",
            actor=world.owner if i % 3 else None, via=list(Via)[i % len(Via)], target_type=target_type,
            target_id=target_id, target_name=target_name,
            params={"placement": {"host": "h"}, "n": i, "nested": [1, None, "x"]} if i % 2 else {},
            result={"explanation": "why", "ok": True} if i % 2 == 0 else {"list": [1.5]},
            error="failed" if status == JobStatus.FAILED else "", error_detail="libvirt said no", traceback="Tb",
            log="line\n" * i, attempts=i % 3, started_at=later if i % 2 else None,
            finished_at=later if i % 4 == 0 else None)
    client = APIClient()
    client.force_authenticate(getattr(world, role))
    paths = ["/api/jobs/", "/api/jobs/?page_size=4&page=2", "/api/jobs/?pagination=cursor&page_size=3"]
    paths += [f"/api/jobs/{pk}/" for pk in Job.objects.values_list("pk", flat=True)]

    def pages():
        return {path: (lambda r: (r.status_code, r.content))(client.get(path)) for path in paths}

    with timezone.override("Asia/Kathmandu"):
        fast = pages()
        summary = JobSummarySerializer(list(Job.objects.order_by("created_at")), many=True).data
        _drf_path(monkeypatch)
        slow = pages()
        plain_summary = JobSummarySerializer(list(Job.objects.order_by("created_at")), many=True).data
    for path in paths:
        assert fast[path] == slow[path], path
    assert sum(body.count(b'"kind":"vm.kind') for status, body in fast.values() if status == 200) > 2 * len(JobStatus)
    assert any(b'"placement"' in body for _, body in fast.values()) == (role == "admin")
    assert _typed(list(summary)) == _typed(list(plain_summary))
