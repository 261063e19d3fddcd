"""Per-device custom properties: the catalog, validation, the administrators' rules, the domain XML they
make, and the NIC door (service, API, CLI) and the rules' admin page (libvirt's test driver)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from portal.exceptions import PermissionDenied, ValidationFailed
from portal.hypervisor import DiskSpec, DomainSpec, NicSpec, get_driver
from portal.hypervisor.domain_xml import boot_order, build_domain_xml
from portal.models import AuditEvent
from vms import properties as props
from vms import services
from vms.admin import DevicePropertyRuleForm
from vms.models import DevicePropertyRule, VMNic
from vms.specs import build_spec

SEEDED_USER = {("disk", "cache"), ("disk", "discard"), ("disk", "detect_zeroes"), ("disk", "serial"),
               ("disk", "boot_order"), ("nic", "boot_order")}


def validate(properties, actor=None, current=None, device="disk"):
    return props.validate_properties(device=device, properties=properties, actor=actor, current=current)


# --- the catalog and validation (administrators: actor None is the system) ---------------------------

def test_the_catalog_lists_every_property_once_with_its_kind():
    disk = {p.name: p for p in props.property_catalog("disk")}
    assert list(disk) == ["cache", "io", "discard", "detect_zeroes", "serial", "boot_order", "total_iops_sec",
                          "read_iops_sec", "write_iops_sec", "total_bytes_sec", "read_bytes_sec", "write_bytes_sec"]
    assert disk["io"].choices == ("threads", "native", "io_uring")
    assert disk["boot_order"].minimum == 1 and disk["boot_order"].maximum == 32
    assert [p.name for p in props.property_catalog("nic")] == ["boot_order"]
    with pytest.raises(ValueError):
        props.property_catalog("cpu")


def test_values_are_normalised_and_merged_over_the_current_ones():
    current = {"cache": "writeback", "serial": "OLD"}
    out = validate({"Cache": " NONE ", "io": "Native", "total-iops-sec": "500", "boot_order": 2, "serial": ""},
                   current=current)
    assert out == {"cache": "none", "io": "native", "total_iops_sec": 500, "boot_order": 2}
    assert current == {"cache": "writeback", "serial": "OLD"}  # not changed in place
    assert validate(None, current={"cache": "none"}) == {"cache": "none"}


@pytest.mark.parametrize("properties, words", [
    ({"colour": "red"}, "Unknown disk property 'colour'"),
    ({"cache": "fast"}, "cache must be one of"),
    ({"cache": 3}, "cache must be text"),
    ({"boot_order": 0}, "boot_order must be between 1 and 32"),
    ({"boot_order": 33}, "boot_order must be between 1 and 32"),
    ({"boot_order": True}, "boot_order must be a whole number"),
    ({"total_iops_sec": -1}, "total_iops_sec must be between 0 and"),
    ({"total_iops_sec": "1e3"}, "total_iops_sec must be a whole number"),
    ({"read_bytes_sec": 10**13}, "read_bytes_sec must be between 0 and"),
    ({"serial": "x" * 21}, "serial must be 1 to 20"),
    ({"serial": "a b"}, "serial must be 1 to 20"),
    ({"serial": "<x/>"}, "serial must be 1 to 20"),
    ({"io": "native"}, "io=native needs cache=none or cache=directsync"),
    ({"io": "native", "cache": "writeback"}, "io=native needs cache=none"),
    ({"detect_zeroes": "unmap"}, "detect_zeroes=unmap needs discard=unmap"),
    ({"total_iops_sec": 100, "read_iops_sec": 50}, "total_iops_sec cannot be set together with read_iops_sec"),
    ({"total_bytes_sec": 100, "write_bytes_sec": 50}, "total_bytes_sec cannot be set together with write_bytes"),
])
def test_bad_values_and_combinations_are_refused_naming_the_property(properties, words):
    with pytest.raises(ValidationFailed) as err:
        validate(properties)
    assert words in err.value.message
    assert list(err.value.errors) == ["properties"]


def test_valid_combinations_pass():
    assert validate({"io": "native", "cache": "directsync", "discard": "unmap", "detect_zeroes": "unmap",
                     "read_iops_sec": 10, "write_iops_sec": 20, "total_bytes_sec": 10**6})["io"] == "native"
    # a combination is checked on the merged result: removing discard breaks detect_zeroes=unmap
    with pytest.raises(ValidationFailed, match="detect_zeroes=unmap"):
        validate({"discard": None}, current={"discard": "unmap", "detect_zeroes": "unmap"})


def test_nic_properties_are_boot_order_only():
    assert validate({"boot_order": "3"}, device="nic") == {"boot_order": 3}
    with pytest.raises(ValidationFailed, match="Unknown nic property 'cache'"):
        validate({"cache": "none"}, device="nic")


def test_spec_keyword_arguments_of_stored_properties():
    stored = {"cache": "none", "serial": "S1", "boot_order": 1, "write_iops_sec": 7, "read_iops_sec": 5,
              "total_bytes_sec": 0}
    assert props.disk_spec_properties(stored) == {
        "cache": "none", "serial": "S1", "boot_order": 1,
        "iotune": (("read_iops_sec", 5), ("write_iops_sec", 7))}
    assert props.disk_spec_properties({}) == {}
    assert props.nic_spec_properties({"boot_order": 2}) == {"boot_order": 2}
    assert props.iotune_of({"total_iops_sec": 9})["total_iops_sec"] == 9
    assert props.iotune_of({"total_iops_sec": 9})["read_bytes_sec"] == 0


# --- who may set what (rules seeded by vms/migrations/0010) ---------------------------------------

@pytest.mark.django_db
def test_the_seeded_rules_let_users_set_the_safe_properties_only(alice, admin_user):
    assert set(DevicePropertyRule.objects.filter(users_may_set=True).values_list("device", "name")) == SEEDED_USER
    assert validate({"cache": "none", "serial": "DATA1", "boot_order": 1}, actor=alice)["serial"] == "DATA1"
    for name, value in (("io", "threads"), ("total_iops_sec", 100)):
        with pytest.raises(PermissionDenied, match=f"{name} may be set by administrators only"):
            validate({name: value}, actor=alice)
    assert validate({"io": "threads", "total_iops_sec": 100}, actor=admin_user) == {"io": "threads",
                                                                                     "total_iops_sec": 100}


@pytest.mark.django_db
def test_users_keep_or_resubmit_what_an_administrator_set_but_cannot_change_or_remove_it(alice):
    current = {"total_iops_sec": 100, "cache": "none"}
    assert validate({"total_iops_sec": "100", "cache": "writeback"}, actor=alice, current=current) == {
        "total_iops_sec": 100, "cache": "writeback"}
    with pytest.raises(PermissionDenied, match="total_iops_sec may be set by administrators only"):
        validate({"total_iops_sec": None}, actor=alice, current=current)


@pytest.mark.django_db
def test_allowed_values_limit_users_and_a_missing_rule_means_administrators_only(alice):
    DevicePropertyRule.objects.filter(device="disk", name="cache").update(allowed_values=["none", "WRITEBACK"])
    assert validate({"cache": "writeback"}, actor=alice) == {"cache": "writeback"}
    with pytest.raises(PermissionDenied, match=r"cache may be one of: none, writeback \(not 'unsafe'\)"):
        validate({"cache": "unsafe"}, actor=alice)
    DevicePropertyRule.objects.filter(device="nic", name="boot_order").delete()
    with pytest.raises(PermissionDenied, match="boot_order may be set by administrators only"):
        validate({"boot_order": 1}, actor=alice, device="nic")


@pytest.mark.django_db
def test_the_rule_admin_form_validates_allowed_values_against_the_catalog():
    rule = DevicePropertyRule.objects.get(device="disk", name="cache")
    form = DevicePropertyRuleForm({"device": "disk", "name": "cache", "users_may_set": "on",
                                   "allowed_values": "none, Writeback, none"}, instance=rule)
    assert form.is_valid(), form.errors
    assert form.save().allowed_values == ["none", "writeback"]
    bad = DevicePropertyRuleForm({"device": "disk", "name": "cache", "users_may_set": "on",
                                  "allowed_values": "none, turbo"}, instance=rule)
    assert not bad.is_valid() and "cache must be one of" in bad.errors["allowed_values"][0]
    wrong_device = DevicePropertyRuleForm({"device": "nic", "name": "cache", "users_may_set": "on",
                                           "allowed_values": ""})
    assert not wrong_device.is_valid() and "A nic has no property cache" in wrong_device.errors["name"][0]
    limits = DevicePropertyRuleForm({"device": "disk", "name": "total_iops_sec", "users_may_set": "on",
                                     "allowed_values": "0, 500, abc"},
                                    instance=DevicePropertyRule.objects.get(device="disk", name="total_iops_sec"))
    assert not limits.is_valid() and "total_iops_sec must be a whole number" in limits.errors["allowed_values"][0]
    negative = DevicePropertyRuleForm({"device": "disk", "name": "total_iops_sec", "users_may_set": "on",
                                       "allowed_values": "-5"},
                                      instance=DevicePropertyRule.objects.get(device="disk", name="total_iops_sec"))
    assert not negative.is_valid() and "total_iops_sec must be between 0 and" in negative.errors["allowed_values"][0]


@pytest.mark.django_db
def test_the_rule_admin_page_lists_and_changes_rules(admin_user, client):
    client.force_login(admin_user)
    page = client.get("/admin/vms/devicepropertyrule/")
    assert page.status_code == 200 and b"Cache mode" in page.content and b"total_iops_sec" in page.content
    rule = DevicePropertyRule.objects.get(device="disk", name="io")
    resp = client.post(f"/admin/vms/devicepropertyrule/{rule.pk}/change/",
                       {"device": "disk", "name": "io", "users_may_set": "on", "allowed_values": "threads, io_uring"})
    assert resp.status_code == 302
    rule.refresh_from_db()
    assert rule.users_may_set and rule.allowed_values == ["threads", "io_uring"]
    assert AuditEvent.objects.filter(action="device_property_rule.change").exists()


# --- rendering -------------------------------------------------------------------------------------

def _spec(disks, nics=(), **kw):
    return DomainSpec(name="d", uuid="00000000-0000-0000-0000-0000000000aa", vcpus=1, memory_mib=64,
                      domain_type="qemu", disks=tuple(disks), nics=tuple(nics), **kw)


def test_disk_properties_render_as_driver_attributes_serial_boot_and_iotune():
    disk = DiskSpec(path="/p/a.qcow2", **props.disk_spec_properties(
        {"cache": "none", "io": "native", "discard": "unmap", "detect_zeroes": "unmap", "serial": "S-1.x",
         "boot_order": 2, "read_iops_sec": 100, "total_bytes_sec": 10**6}))
    root = ET.fromstring(build_domain_xml(_spec([disk], [NicSpec(network="n", boot_order=1)])))
    d = root.find("devices/disk")
    assert d.find("driver").attrib == {"name": "qemu", "type": "qcow2", "cache": "none", "io": "native",
                                       "discard": "unmap", "detect_zeroes": "unmap"}
    assert d.findtext("serial") == "S-1.x" and d.find("boot").get("order") == "2"
    assert {c.tag: c.text for c in d.find("iotune")} == {"total_bytes_sec": "1000000", "read_iops_sec": "100"}
    assert root.find("devices/interface/boot").get("order") == "1"
    assert root.findall("os/boot") == []  # libvirt refuses <os><boot dev> beside per-device orders


def test_a_disk_without_properties_renders_as_before_and_boots_by_dev():
    xml = build_domain_xml(_spec([DiskSpec(path="/p/a.qcow2")], [NicSpec(network="n")]))
    d = ET.fromstring(xml).find("devices/disk")
    assert d.find("driver").attrib == {"name": "qemu", "type": "qcow2"}
    assert d.find("serial") is None and d.find("boot") is None and d.find("iotune") is None
    assert boot_order(xml) == ["hd"]


def test_libvirt_accepts_the_properties(driver):
    """libvirt's own parser (test driver) takes every property and keeps them in the definition."""
    disk = DiskSpec(path="/p/props.qcow2", **props.disk_spec_properties(
        {"cache": "directsync", "io": "io_uring", "discard": "unmap", "detect_zeroes": "on", "serial": "SER1",
         "boot_order": 1, "total_iops_sec": 300}))
    spec = DomainSpec(name="props-xml", uuid="00000000-0000-0000-0000-00000000ab01", vcpus=1, memory_mib=64,
                      domain_type="test", disks=(disk,), nics=(NicSpec(network="default", boot_order=2),))
    info = driver.define(spec)
    try:
        root = ET.fromstring(driver.domain_xml(info.uuid, inactive=True))
        d = root.find("devices/disk")
        assert d.find("driver").get("cache") == "directsync" and d.find("driver").get("io") == "io_uring"
        assert d.findtext("serial") == "SER1" and d.findtext("iotune/total_iops_sec") == "300"
        assert root.find("devices/interface/boot").get("order") == "2"
    finally:
        driver.undefine(info.uuid)


# --- the NIC door: service, API, CLI ---------------------------------------------------------------

@pytest.fixture
def nic_vm(make_network, alice):
    # A transactional test starts from an empty database: the rules the migration seeds are gone.
    for device, name in SEEDED_USER:
        DevicePropertyRule.objects.get_or_create(device=device, name=name, defaults={"users_may_set": True})
    make_network("lab", "10.77.0.0/24", is_public=True, is_default=True)
    vm = services.vm_create(actor=alice, via="api", name="web-1", vcpus=1, memory_mib=128, disk_gib=1).vm
    return vm, vm.nics.get()


pytestmark_tx = pytest.mark.django_db(transaction=True)


@pytestmark_tx
def test_nic_update_changes_model_and_boot_order_in_the_definition(nic_vm, alice, test_host):
    vm, nic = nic_vm
    found, job, message = services.vm_nic_update(actor=alice, via="cli", vm=vm, nic=nic.mac, model="e1000",
                                                 properties={"boot_order": "1"})
    assert job is None and "applies at its next start" in message
    nic.refresh_from_db()
    assert nic.model == "e1000" and nic.properties == {"boot_order": 1}
    root = ET.fromstring(get_driver(test_host.uri).domain_xml(str(vm.uuid), inactive=True))
    assert root.find("devices/interface/model").get("type") == "e1000"
    assert root.find("devices/interface/boot").get("order") == "1"
    assert build_spec(vm, domain_type="test").nics[0].boot_order == 1
    assert AuditEvent.objects.filter(action="vm.nic.update", target_id=str(vm.pk)).exists()
    _same, _job, again = services.vm_nic_update(actor=alice, via="cli", vm=vm, nic=nic.pk, properties={})
    assert "already like that" in again


@pytestmark_tx
def test_nic_update_refuses_bad_input_and_a_boot_order_a_disk_has(nic_vm, alice, test_host):
    vm, nic = nic_vm
    with pytest.raises(ValidationFailed, match="NIC model must be one of"):
        services.vm_nic_update(actor=alice, via="cli", vm=vm, nic=nic.pk, model="ne2k")
    with pytest.raises(ValidationFailed, match="Unknown nic property 'io'"):
        services.vm_nic_update(actor=alice, via="cli", vm=vm, nic=nic.pk, properties={"io": "native"})
    vm.disks.filter(target="vda").update(properties={"boot_order": 1})
    with pytest.raises(ValidationFailed, match="boot_order 1 is already the disk vda's"):
        services.vm_nic_update(actor=alice, via="cli", vm=vm, nic=nic.pk, properties={"boot_order": 1})
    nic.refresh_from_db()
    assert nic.properties == {} and nic.model == "virtio"


@pytestmark_tx
def test_nic_patch_through_the_api(nic_vm, alice, bob, client_for, test_host):
    vm, nic = nic_vm
    url = f"/api/vms/{vm.pk}/nics/{nic.pk}/"
    resp = client_for(alice).patch(url, {"properties": {"boot_order": 3}}, format="json")
    assert resp.status_code == 200, resp.content
    assert resp.json()["nic"]["properties"] == {"boot_order": 3} and resp.json()["job"] is None
    assert "next start" in resp.json()["message"]
    bad = client_for(alice).patch(url, {"properties": {"boot_order": 99}}, format="json")
    assert bad.status_code == 400 and "boot_order must be between 1 and 32" in bad.json()["detail"]
    assert client_for(bob).patch(url, {"model": "e1000"}, format="json").status_code == 404
    assert VMNic.objects.get(pk=nic.pk).properties == {"boot_order": 3}


@pytestmark_tx
def test_nic_set_on_the_command_line(nic_vm, alice, test_host):
    vm, nic = nic_vm
    out = StringIO()
    call_command("vm", "--user", "alice", "nic-set", "web-1", nic.mac, "--model", "rtl8139", "--prop", "boot_order=2",
                 stdout=out)
    assert "model rtl8139, properties boot_order=2" in out.getvalue()
    call_command("vm", "--user", "alice", "nic-set", "web-1", str(nic.pk), "--unset", "boot_order", stdout=out)
    assert VMNic.objects.get(pk=nic.pk).properties == {}
    with pytest.raises(CommandError, match="--prop takes NAME=VALUE"):
        call_command("vm", "--user", "alice", "nic-set", "web-1", str(nic.pk), "--prop", "boot_order")


# --- review fixes (issue #11) -----------------------------------------------------------------------

@pytest.mark.django_db
def test_users_cannot_remove_a_property_whose_rule_lists_allowed_values(alice, admin_user):
    DevicePropertyRule.objects.filter(device="disk", name="cache").update(allowed_values=["none", "writeback"])
    current = {"cache": "none", "serial": "S1"}
    for removal in (None, "", "  "):
        with pytest.raises(PermissionDenied, match="cache is limited to none, writeback: only an administrator"):
            validate({"cache": removal}, actor=alice, current=current)
    assert validate({"cache": "writeback"}, actor=alice, current=current)["cache"] == "writeback"
    assert validate({"serial": None}, actor=alice, current=current) == {"cache": "none"}  # no list: removable
    assert validate({"cache": None}, actor=admin_user, current=current) == {"serial": "S1"}


@pytest.mark.parametrize("value", ["²", "١٢", "9" * 5000, "1" + "0" * 40])
def test_odd_digit_strings_are_a_validation_error_not_a_crash(value):
    with pytest.raises(ValidationFailed) as err:
        validate({"boot_order": value})
    assert "boot_order" in err.value.message and len(err.value.message) < 200
