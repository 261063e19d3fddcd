"""Fixes from the fresh-user trial of issue #11 (findings 1, 5, 6, 11, 12, 13) on libvirt's test driver:
boot_order refused where it cannot apply and a failed property job putting the old properties back,
`storage_domain` on disk add, labels that cannot pass for ids or targets, forbidden properties a 403 /
exit 4, range messages for negative numbers, and bad properties a 400 even while a job is pending.

Jobs run on commit (ImmediateBackend): a returned job has already run when the test looks.
"""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from portal.exceptions import PermissionDenied, ValidationFailed
from portal.models import Job
from storage.models import Volume
from vms import services
from vms.disks import vm_disk_add, vm_disk_grow, vm_disk_update
from vms.models import VM, VMDisk

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def user_rules(db):
    """The seeded rules (a transactional test database starts without them)."""
    from vms.models import DevicePropertyRule

    for name in ("cache", "discard", "detect_zeroes", "serial", "boot_order"):
        DevicePropertyRule.objects.update_or_create(device="disk", name=name, defaults={"users_may_set": True})


def make_vm(user, name="web-1", **kw):
    return services.vm_create(actor=user, via="cli", name=name, vcpus=1, memory_mib=128, disk_gib=1, start=False,
                              **kw).vm


def data_disk(user, vm, label="data"):
    disk, job, _ = vm_disk_add(actor=user, via="api", vm=vm, size_gib=1, label=label)
    assert Job.objects.get(pk=job.pk).status == "succeeded"
    return VMDisk.objects.get(pk=disk.pk)


def test_boot_order_is_refused_on_a_vm_that_boots_its_images_kernel(test_host, alice):
    vm = make_vm(alice)
    disk = data_disk(alice, vm)
    vm.image.boot_mode = vm.image.BootMode.KERNEL
    vm.image.save(update_fields=["boot_mode"])
    with pytest.raises(ValidationFailed, match="boot_order does not apply to web-1: it boots its image's kernel"):
        vm_disk_update(actor=alice, via="api", vm=vm, disk=disk.target, properties={"boot_order": 1})
    disk.refresh_from_db()
    assert not (disk.properties or {}).get("boot_order")
    assert not Job.objects.filter(kind="vm.disk.update").exists()


def test_a_failed_property_job_puts_the_previous_properties_back(test_host, alice, driver):
    import xml.etree.ElementTree as ET

    from portal.hypervisor.domain_xml import drop_os_boot

    vm = make_vm(alice)
    disk = data_disk(alice, vm)
    vm_disk_update(actor=alice, via="api", vm=vm, disk=disk.target, properties={"cache": "none"})
    disk.refresh_from_db()
    assert disk.properties == {"cache": "none"}
    # Behind the portal's back the boot disk gets boot order 1: libvirt then refuses a second one.
    root = ET.fromstring(drop_os_boot(driver.domain_xml(str(vm.uuid), inactive=True)))
    for element in root.findall("devices/disk"):
        if element.find("target").get("dev") == "vda":
            ET.SubElement(element, "boot", order="1")
    driver.connection().defineXML(ET.tostring(root, encoding="unicode"))
    _, job, _ = vm_disk_update(actor=alice, via="api", vm=vm, disk=disk.target,
                               properties={"boot_order": 1, "serial": "S1"})
    assert job.params["previous_properties"] == {"cache": "none"}
    job = Job.objects.get(pk=job.pk)
    assert job.status == "failed"
    disk.refresh_from_db()
    assert disk.properties == {"cache": "none"}  # as the definition still has it
    assert "vdb" in driver.domain_xml(str(vm.uuid), inactive=True)


def test_disk_add_takes_storage_domain_and_refuses_unknown_fields(test_host, alice, client_for):
    client = client_for(alice)
    vm = make_vm(alice)
    url = f"/api/vms/{vm.pk}/disks/"
    response = client.post(url, {"size_gib": 1, "storage_domain": "nope"}, format="json")
    assert response.status_code == 404 or response.status_code == 400, response.json()
    assert "nope" in response.json()["detail"]
    response = client.post(url, {"size_gib": 1, "storage_pool": "default"}, format="json")
    assert response.status_code == 400 and "storage_pool" in response.json()["errors"], response.json()
    response = client.post(url, {"size_gib": 1, "storage_domain": "a", "pool": "b"}, format="json")
    assert response.status_code == 400 and "storage_domain" in response.json()["errors"], response.json()
    assert not Volume.objects.filter(owner=alice).exists()
    pool = vm.host.pools.first() if hasattr(vm.host, "pools") else None
    name = pool.name if pool is not None else "default"
    response = client.post(url, {"size_gib": 1, "storage_domain": name}, format="json")
    assert response.status_code == 202, response.json()
    assert Volume.objects.get(owner=alice).pool.name == name


@pytest.mark.parametrize("label", ["4", "vda", "sdb", "hdc", "VDA", "xvda"])
def test_labels_that_pass_for_an_id_or_a_target_are_refused(test_host, alice, label):
    vm = make_vm(alice)
    with pytest.raises(ValidationFailed, match="cannot be a number or look like a disk target"):
        vm_disk_add(actor=alice, via="api", vm=vm, size_gib=1, label=label)
    assert not Volume.objects.filter(owner=alice).exists()


def test_labels_like_vdb1_or_data4_are_fine(test_host, alice):
    vm = make_vm(alice)
    assert data_disk(alice, vm, "vdb1").volume.label == "vdb1"
    assert data_disk(alice, vm, "4data").volume.label == "4data"


def test_a_property_users_may_not_set_is_forbidden_not_invalid(test_host, alice, client_for):
    vm = make_vm(alice)
    disk = data_disk(alice, vm)
    with pytest.raises(PermissionDenied, match="io may be set by administrators only"):
        vm_disk_update(actor=alice, via="api", vm=vm, disk=disk.target, properties={"io": "native"})
    response = client_for(alice).patch(f"/api/vms/{vm.pk}/disks/{disk.target}/",
                                       {"properties": {"io": "threads"}}, format="json")
    assert response.status_code == 403 and response.json()["code"] == "forbidden", response.json()
    with pytest.raises(CommandError) as exc:
        call_command("vm", "--user", "alice", "disk", "set", "web-1", disk.target, "io=threads")
    assert exc.value.returncode == PermissionDenied.exit_code
    # A bad value is still invalid input.
    with pytest.raises(ValidationFailed, match="cache must be one of"):
        vm_disk_update(actor=alice, via="api", vm=vm, disk=disk.target, properties={"cache": "turbo"})


def test_negative_sizes_and_limits_say_the_range(test_host, alice, admin_user):
    vm = make_vm(alice)
    disk = data_disk(alice, vm)
    with pytest.raises(ValidationFailed, match=r"between 1 and \d+ GiB"):
        vm_disk_grow(actor=alice, via="api", vm=vm, disk=disk.target, size_gib="-3")
    with pytest.raises(ValidationFailed, match="total_iops_sec must be between 0 and"):
        vm_disk_update(actor=admin_user, via="api", vm=vm, disk=disk.target, properties={"total_iops_sec": "-5"})


def test_bad_properties_are_invalid_even_while_a_disk_job_is_pending(test_host, alice, client_for):
    vm = make_vm(alice)
    disk = data_disk(alice, vm)
    # A queued job (a row only: nothing runs it here).
    Job.objects.create(kind="vm.disk.grow", actor=alice, via="api", target_type="vm", target_id=str(vm.pk),
                       target_name=vm.name, params={"disk_id": disk.pk}, status="pending")
    response = client_for(alice).patch(f"/api/vms/{vm.pk}/disks/{disk.target}/",
                                       {"properties": {"cache": "turbo"}}, format="json")
    assert response.status_code == 400 and "cache must be one of" in response.json()["detail"], response.json()
    response = client_for(alice).patch(f"/api/vms/{vm.pk}/disks/{disk.target}/",
                                       {"properties": {"cache": "none"}}, format="json")
    assert response.status_code == 409, response.json()
    assert VM.objects.filter(pk=vm.pk).exists()


def test_a_boot_order_replaces_the_firmware_boot_devices_in_the_definition(test_host, alice, driver):
    from portal.hypervisor.domain_xml import boot_order

    vm = make_vm(alice)
    disk = data_disk(alice, vm)
    assert boot_order(driver.domain_xml(str(vm.uuid), inactive=True)) == ["hd"]
    _, job, _ = vm_disk_update(actor=alice, via="api", vm=vm, disk=disk.target, properties={"boot_order": 1})
    job = Job.objects.get(pk=job.pk)
    assert job.status == "succeeded", job.error
    xml = driver.domain_xml(str(vm.uuid), inactive=True)
    assert boot_order(xml) == [] and "<boot order='1'/>" in xml.replace('"', "'")
    disk.refresh_from_db()
    assert disk.properties == {"boot_order": 1}
