"""Templates on libvirt's test driver: sealing a stopped VM, the rules around it, thin clones and full
copies made from a template, and image deletion refused while thin clones depend on it."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import transaction

from portal.exceptions import (
    Conflict,
    InvalidState,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    ValidationFailed,
)
from portal.hypervisor import get_driver
from portal.models import AuditEvent, Job
from quotas.models import Quota
from quotas.selectors import quota_usage
from storage.models import Image, Volume
from storage.services import image_delete, image_from_volume, image_volume_name
from vms import services
from vms.choices import VMStatus
from vms.models import VM

pytestmark = pytest.mark.django_db(transaction=True)


def volumes_in_pool() -> set[str]:
    return {v.name for v in get_driver("test:///default").list_volumes(pool=settings.STORAGE_POOL)}


def stopped_vm(user, name="web-1", disk_gib=2, **kw) -> VM:
    result = services.vm_create(actor=user, via="cli", name=name, vcpus=1, memory_mib=256, disk_gib=disk_gib,
                                start=False, **kw)
    vm = VM.objects.get(pk=result.vm.pk)
    assert vm.status == VMStatus.STOPPED
    return vm


def make_template(user, vm, name="tpl-web", **kw) -> Image:
    job = services.vm_template_create(actor=user, via="cli", vm=vm, name=name, **kw)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    return Image.objects.get(name=name)


def disk_used(user) -> int:
    return {u.resource: u.used for u in quota_usage(user=user)}["disk_gib"]


def test_a_stopped_vm_is_sealed_into_a_template_with_its_sizes(test_host, alice):
    vm = stopped_vm(alice)
    before = disk_used(alice)
    job = services.vm_template_create(actor=alice, via="cli", vm=vm, name="tpl-web", title="Web server",
                                      description="nginx, configured")
    job.refresh_from_db()
    assert job.status == "succeeded" and job.kind == "vm.template"
    image = Image.objects.get(name="tpl-web")
    assert image.kind == Image.Kind.TEMPLATE and image.owner == alice
    assert image.visibility == Image.Visibility.PRIVATE and image.title == "Web server"
    assert (image.default_vcpus, image.default_memory_mib, image.min_disk_gib) == (1, 256, 2)
    assert image.source == "vm:web-1" and image.size_bytes == 2 * 1024**3
    assert image.volume_name.startswith(image_volume_name("tpl-web-").removesuffix(".qcow2"))
    assert image.volume_name in volumes_in_pool() and image.path.endswith(image.volume_name)
    assert image.boot_mode == vm.image.boot_mode  # inherited from the VM's image
    assert disk_used(alice) == before + 2  # a user's template counts against their disk quota
    vm.refresh_from_db()
    assert vm.status == VMStatus.STOPPED  # untouched
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"vm.template", "vm.templated", "image.create"} <= actions


def test_a_running_vm_is_refused(test_host, alice):
    result = services.vm_create(actor=alice, via="cli", name="web-1", vcpus=1, memory_mib=128, disk_gib=1)
    with pytest.raises(InvalidState, match="Stop it first"):
        services.vm_template_create(actor=alice, via="cli", vm=result.vm, name="tpl-web")
    assert not Image.objects.filter(name="tpl-web").exists()
    assert not Job.objects.filter(kind="vm.template").exists()


def test_only_the_owner_or_an_admin_may_seal_a_vm(test_host, alice, bob, admin_user):
    team = Group.objects.create(name="team")
    alice.groups.add(team)
    bob.groups.add(team)
    vm = stopped_vm(alice, group="team")  # bob sees it through the team, but it is not his
    with pytest.raises(PermissionDenied, match="Only the owner"):
        services.vm_template_create(actor=bob, via="cli", vm=vm, name="tpl-bob")
    other = stopped_vm(alice, name="web-2")
    with pytest.raises(NotFound):  # not even visible to bob
        services.vm_template_create(actor=bob, via="cli", vm=other, name="tpl-bob")
    with pytest.raises(PermissionDenied, match="administrators"):
        services.vm_template_create(actor=alice, via="cli", vm=vm, name="tpl-lib", library=True)
    image = make_template(admin_user, vm, name="tpl-lib", library=True, visibility="public")
    assert image.owner is None  # the library's: nobody's quota
    assert not Image.objects.filter(name="tpl-bob").exists()


def test_the_disk_quota_is_checked_up_front(test_host, alice):
    vm = stopped_vm(alice, disk_gib=12)  # alice may use 20 GiB: 12 for the VM, 12 more do not fit
    with pytest.raises(QuotaExceeded, match="Disk"):
        services.vm_template_create(actor=alice, via="cli", vm=vm, name="tpl-big")
    assert not Job.objects.filter(kind="vm.template").exists()


def test_a_failure_when_the_row_is_written_removes_the_copy(test_host, alice):
    """The quota is checked again as the row is written: a copy that no longer fits is removed."""
    vm = stopped_vm(alice, disk_gib=12)
    volume = vm.disks.get(target="vda").volume
    with pytest.raises(QuotaExceeded):
        image_from_volume(actor=alice, via="cli", volume=volume, name="tpl-big", title="", owner=alice)
    assert not Image.objects.filter(name="tpl-big").exists()
    assert not [v for v in volumes_in_pool() if "tpl-big" in v]


def test_a_template_job_that_fails_leaves_no_volume_and_no_image(test_host, alice):
    """The quota shrinks between the request and the job: the job fails with the quota's words, its
    copy is removed, no image is listed, and the VM is as it was (it can start again)."""
    vm = stopped_vm(alice, disk_gib=4)
    with transaction.atomic():  # the job runs when this commits, after the quota has shrunk
        job = services.vm_template_create(actor=alice, via="cli", vm=vm, name="tpl-late")
        Quota.objects.filter(user=alice).update(max_disk_gib=5)
    job.refresh_from_db()
    assert job.status == "failed" and "Quota exceeded for Disk" in job.error
    assert not Image.objects.filter(name="tpl-late").exists()
    assert not [v for v in volumes_in_pool() if "tpl-late" in v]
    assert AuditEvent.objects.filter(action="vm.template", outcome="failed").exists()
    assert services.vm_start(actor=alice, via="cli", vm=vm).job is not None


@pytest.mark.parametrize("name, message", [("test-blank", "exists already"), ("Bad Name", "lowercase")])
def test_a_taken_or_bad_name_is_refused(test_host, alice, name, message):
    vm = stopped_vm(alice)
    with pytest.raises(ValidationFailed, match=message) as exc:
        services.vm_template_create(actor=alice, via="cli", vm=vm, name=name)
    assert "name" in exc.value.errors


def test_the_vm_cannot_start_or_be_deleted_while_its_template_is_made(test_host, alice):
    vm = stopped_vm(alice)
    # A queued template job (made directly: the test backend would run a real one at once).
    Job.objects.create(kind="vm.template", via="cli", target_type="vm", target_id=str(vm.pk),
                       target_name=vm.name, params={"name": "tpl-web"})
    with pytest.raises(InvalidState, match="template tpl-web is being made"):
        services.vm_start(actor=alice, via="cli", vm=vm)
    with pytest.raises(InvalidState, match="template tpl-web is being made"):
        services.vm_delete(actor=alice, via="cli", vm=vm)
    other = stopped_vm(alice, name="web-2")
    with pytest.raises(ValidationFailed, match="being made already"):
        services.vm_template_create(actor=alice, via="cli", vm=other, name="tpl-web")


def test_thin_clones_and_full_copies_from_a_template(test_host, alice, bob):
    source = stopped_vm(alice)
    template = make_template(alice, source)
    thin = services.vm_create(actor=alice, via="cli", name="thin-1", image="tpl-web", start=False).vm
    thin.refresh_from_db()
    assert (thin.vcpus, thin.memory_mib, thin.disk_gib) == (1, 256, 2)  # the template's sizes by default
    disk = thin.disks.get(target="vda").volume
    assert disk.backing_image == template and disk.copy_of is None
    full = services.vm_create(actor=alice, via="cli", name="full-1", image=template, clone="full",
                              disk_gib=3, start=False).vm
    full.refresh_from_db()
    assert full.status == VMStatus.STOPPED and full.disk_gib == 3
    copy = full.disks.get(target="vda").volume
    assert copy.backing_image is None and copy.copy_of == template and copy.path
    info = get_driver("test:///default").volume_info(pool=settings.STORAGE_POOL, name=copy.name)
    assert info.backing_path is None and info.capacity_bytes == 3 * 1024**3
    with pytest.raises(ValidationFailed, match="thin or full"):
        services.vm_create(actor=alice, via="cli", name="x-1", image=template, clone="deep")
    with pytest.raises(ValidationFailed, match="Unknown image"):  # private: bob cannot use it
        services.vm_create(actor=bob, via="cli", name="b-1", image="tpl-web", vcpus=1, memory_mib=128, disk_gib=2)


def test_delete_is_refused_while_thin_clones_depend_on_it_naming_them(test_host, alice):
    template = make_template(alice, stopped_vm(alice))
    services.vm_create(actor=alice, via="cli", name="thin-1", image=template, start=False)
    services.vm_create(actor=alice, via="cli", name="full-1", image=template, clone="full", start=False)
    with pytest.raises(Conflict, match=r"thin clones: thin-1\)") as exc:
        image_delete(actor=alice, via="cli", image=template)
    assert "full-1" not in exc.value.message  # full copies do not depend on it
    assert Image.objects.filter(pk=template.pk).exists()


def test_full_copies_do_not_keep_a_template(test_host, alice, bob):
    template = make_template(alice, stopped_vm(alice))
    full = services.vm_create(actor=alice, via="cli", name="full-1", image=template, clone="full", start=False).vm
    with pytest.raises(PermissionDenied):
        image_delete(actor=bob, via="cli", image=template)
    image_delete(actor=alice, via="cli", image=template)  # the owner deletes her own template
    assert not Image.objects.filter(pk=template.pk).exists()
    assert template.volume_name not in volumes_in_pool()
    copy = Volume.objects.get(name=f"{full.domain_name}-disk0.qcow2")
    assert copy.copy_of is None and copy.name in volumes_in_pool()  # the copy lives on without it
    full.refresh_from_db()
    assert full.status == VMStatus.STOPPED and full.image is None
    assert services.vm_start(actor=alice, via="cli", vm=full).job is not None


def test_an_iso_has_no_disk_to_copy(test_host, alice):
    Image.objects.filter(name="test-blank").update(kind=Image.Kind.ISO)
    with pytest.raises(ValidationFailed, match="ISO") as exc:
        services.vm_create(actor=alice, via="cli", name="x-1", image="test-blank", clone="full", vcpus=1,
                           memory_mib=128, disk_gib=1)
    assert "clone" in exc.value.errors
