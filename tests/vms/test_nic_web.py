"""The web door for NIC properties (issue #11, part 3): the VM page's NICs panel changes a NIC's model
and boot order through vms.services.vm_nic_update; errors are messages on the page, never a 500.

libvirt's test driver; jobs run on commit, so a transactional database (the rules the migration seeds
are made again by the fixture).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from portal.hypervisor import get_driver
from portal.models import AuditEvent
from vms import services
from vms.models import DevicePropertyRule

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def nic_vm(make_network, alice, test_host):
    DevicePropertyRule.objects.get_or_create(device="nic", name="boot_order", defaults={"users_may_set": True})
    make_network("lab", "10.77.0.0/24", is_public=True, is_default=True)
    vm = services.vm_create(actor=alice, via="api", name="web-1", vcpus=1, memory_mib=128, disk_gib=1).vm
    return vm, vm.nics.get()


def _page(client, vm) -> str:
    return client.get(f"/vms/{vm.pk}/").content.decode()


def test_the_nics_panel_changes_model_and_boot_order(nic_vm, alice, client, test_host):
    vm, nic = nic_vm
    client.force_login(alice)
    panel = client.get(f"/vms/{vm.pk}/nics/").content.decode()
    assert f'action="/vms/{vm.pk}/nics/{nic.pk}/"' in panel
    assert f'id="id_nic_model_{nic.pk}"' in panel and 'name="prop_boot_order"' in panel
    response = client.post(f"/vms/{vm.pk}/nics/{nic.pk}/", {"model": "e1000", "prop_boot_order": "2"})
    assert response.status_code == 302 and response["Location"].endswith(f"/vms/{vm.pk}/#network")
    nic.refresh_from_db()
    assert nic.model == "e1000" and nic.properties == {"boot_order": 2}
    root = ET.fromstring(get_driver(test_host.uri).domain_xml(str(vm.uuid), inactive=True))
    assert root.find("devices/interface/model").get("type") == "e1000"
    assert root.find("devices/interface/boot").get("order") == "2"
    assert AuditEvent.objects.filter(action="vm.nic.update", via="web", target_id=str(vm.pk)).exists()
    page = _page(client, vm)
    assert f"Changed NIC {nic.mac}" in page and "data-nic-boot-order" in page
    # the form shows what the NIC has now; an empty boot order removes it
    panel = client.get(f"/vms/{vm.pk}/nics/").content.decode()
    assert '<option value="e1000" selected>' in panel and 'value="2"' in panel
    client.post(f"/vms/{vm.pk}/nics/{nic.pk}/", {"model": "e1000", "prop_boot_order": ""})
    nic.refresh_from_db()
    assert nic.properties == {}
    root = ET.fromstring(get_driver(test_host.uri).domain_xml(str(vm.uuid), inactive=True))
    assert root.find("devices/interface/boot") is None
    client.post(f"/vms/{vm.pk}/nics/{nic.pk}/", {"model": "e1000", "prop_boot_order": ""})
    assert f"Nothing changed on NIC {nic.mac}" in _page(client, vm)


@pytest.mark.parametrize("body, error", [
    ({"model": "ne2k"}, "NIC model must be one of"),
    ({"prop_boot_order": "99"}, "boot_order must be between 1 and 32"),
    ({"prop_boot_order": "first"}, "boot_order must be a whole number"),
    ({"prop_boot_order": "1"}, "boot_order 1 is already the disk vda"),
])
def test_a_bad_value_is_an_error_on_the_page_and_changes_nothing(nic_vm, alice, client, body, error):
    vm, nic = nic_vm
    vm.disks.filter(target="vda").update(properties={"boot_order": 1})
    client.force_login(alice)
    response = client.post(f"/vms/{vm.pk}/nics/{nic.pk}/", {**body, "next": f"/vms/{vm.pk}/#network"})
    assert response.status_code == 302 and response["Location"].endswith(f"/vms/{vm.pk}/#network")
    assert error in _page(client, vm)
    nic.refresh_from_db()
    assert nic.model == "virtio" and nic.properties == {}


def test_others_vms_and_missing_nics_are_404(nic_vm, alice, bob, client):
    vm, nic = nic_vm
    client.force_login(bob)
    assert client.post(f"/vms/{vm.pk}/nics/{nic.pk}/", {"model": "e1000"}).status_code == 404
    client.force_login(alice)
    assert client.post(f"/vms/{vm.pk}/nics/999999/", {"model": "e1000"}).status_code == 404
    assert client.get(f"/vms/{vm.pk}/nics/{nic.pk}/").status_code == 405
    nic.refresh_from_db()
    assert nic.model == "virtio"


def test_a_boot_order_a_rule_forbids_is_refused(nic_vm, alice, admin_user, client):
    vm, nic = nic_vm
    DevicePropertyRule.objects.filter(device="nic", name="boot_order").update(users_may_set=False)
    client.force_login(alice)
    panel = client.get(f"/vms/{vm.pk}/nics/").content.decode()
    assert 'name="prop_boot_order"' not in panel and "set by administrators" in panel
    client.post(f"/vms/{vm.pk}/nics/{nic.pk}/", {"model": "virtio", "prop_boot_order": "3"})
    assert "boot_order may be set by administrators only" in _page(client, vm)
    # limited to some values: others are refused, the listed ones taken
    DevicePropertyRule.objects.filter(device="nic", name="boot_order").update(users_may_set=True,
                                                                              allowed_values=[1, 2])
    client.post(f"/vms/{vm.pk}/nics/{nic.pk}/", {"prop_boot_order": "3"})
    assert "boot_order may be one of: 1, 2" in _page(client, vm)
    nic.refresh_from_db()
    assert nic.properties == {}
    client.post(f"/vms/{vm.pk}/nics/{nic.pk}/", {"prop_boot_order": "2"})
    nic.refresh_from_db()
    assert nic.properties == {"boot_order": 2}
    # the model is the NIC's own field, open to its users; an administrator may set any boot order
    client.force_login(admin_user)
    client.post(f"/vms/{vm.pk}/nics/{nic.pk}/", {"model": "rtl8139", "prop_boot_order": "7"})
    nic.refresh_from_db()
    assert nic.model == "rtl8139" and nic.properties == {"boot_order": 7}
    # the admin's VM page lists the NICs' properties (read-only, as the disks')
    admin_page = client.get(f"/admin/vms/vm/{vm.pk}/change/")
    assert admin_page.status_code == 200 and "boot_order=7" in admin_page.content.decode()
