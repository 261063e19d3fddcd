"""VMs on networks through the web pages and the REST API: NICs at create, the Network panel and its
ssh line, adding and removing NICs (libvirt's test driver).

Jobs run on commit (ImmediateBackend), so these tests use a transactional database: a 202 or a
redirect means the job has already run when the test looks at the database and at libvirt.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from django.contrib.auth.models import Group

from portal.models import Job
from storage.models import Image, Volume
from vms.models import VM, VMNic

pytestmark = pytest.mark.django_db(transaction=True)

SMALL = {"vcpus": 1, "memory_mib": 128, "disk_gib": 1}
MAC_RE = re.compile(r"^52:54:00(:[0-9a-f]{2}){3}$")


@pytest.fixture
def networks(make_network, alice):
    """lab: open to all and the default; team: alice's team only; secret: administrators only."""
    team = Group.objects.create(name="team-a")
    alice.groups.add(team)
    return {
        "lab": make_network("lab", "10.77.0.0/24", is_public=True, is_default=True),
        "team": make_network("team", "10.78.0.0/24", groups=[team]),
        "secret": make_network("secret", "10.79.0.0/24"),
    }


@pytest.fixture
def ssh_login():
    """The test image logs in as `debian` (what vms.selectors.vm_ssh_command needs for its line)."""
    Image.objects.update(login_user="debian")


def interfaces(driver, vm: VM, *, inactive: bool = False) -> list[tuple[str, str]]:
    """(MAC, libvirt network) of each <interface> in the domain's XML."""
    root = ET.fromstring(driver.domain_xml(str(vm.uuid), inactive=inactive))
    return [(i.find("mac").get("address"), i.find("source").get("network"))
            for i in root.findall("devices/interface[@type='network']")]


def create(client, name="web-1", **extra):
    return client.post("/api/vms/", {"name": name, **SMALL, **extra}, format="json")


def job_of(client, body) -> dict:
    return client.get(body["job"]["url"]).json()


# --- create with networks (API) -------------------------------------------------------------------

def test_create_with_networks_gives_one_nic_each_with_unique_qemu_macs(networks, alice, client_for, driver):
    client = client_for(alice)
    response = create(client, networks=["lab", networks["team"].pk])
    assert response.status_code == 202, response.content
    body = response.json()
    assert [n["network"] for n in body["vm"]["nics"]] == ["lab", "team"]
    assert body["vm"]["ssh"] is None  # no address yet
    assert "user_data" not in body["vm"]

    vm = VM.objects.get(pk=body["vm"]["id"])
    assert vm.status == "running"
    nics = list(vm.nics.order_by("created_at", "id"))
    macs = [n.mac for n in nics]
    assert all(MAC_RE.match(m) for m in macs) and len(set(macs)) == 2
    assert {n.status for n in nics} == {"attached"}
    expected = [(nics[0].mac, networks["lab"].libvirt_name), (nics[1].mac, networks["team"].libvirt_name)]
    assert interfaces(driver, vm) == expected
    assert interfaces(driver, vm, inactive=True) == expected

    again = create(client, "web-2", networks=["lab"]).json()["vm"]
    assert again["nics"][0]["mac"] not in macs
    listed = client.get("/api/vms/").json()["results"]
    assert [len(v["nics"]) for v in listed] == [2, 1]
    assert client.get(body["vm"]["nics_url"]).json()["results"][0]["mac"] == macs[0]


def test_omitted_networks_mean_the_default_one_and_an_empty_list_none(networks, alice, client_for, driver):
    client = client_for(alice)
    default = create(client, "web-1").json()["vm"]
    assert [n["network"] for n in default["nics"]] == ["lab"]
    none = create(client, "web-2", networks=[]).json()["vm"]
    assert none["nics"] == []
    assert interfaces(driver, VM.objects.get(pk=none["id"])) == []
    null = create(client, "web-3", networks=None).json()["vm"]
    assert [n["network"] for n in null["nics"]] == ["lab"]


def test_create_on_a_network_the_user_may_not_use_is_a_field_error_and_leaves_nothing(networks, bob, client_for,
                                                                                      driver):
    domains, volumes = len(driver.list_domains()), Volume.objects.count()
    for key in ("team", networks["secret"].pk, "nope"):
        response = create(client_for(bob), networks=[key])
        assert response.status_code == 400, response.content
        assert response.json()["code"] == "invalid"
        assert list(response.json()["errors"]) == ["networks"]
    assert "may not use the network team" in create(client_for(bob), networks=["team"]).json()["detail"]
    assert "Unknown network 'nope' (yours: lab)" in create(client_for(bob), networks=["nope"]).json()["detail"]
    assert not VM.objects.exists() and Volume.objects.count() == volumes
    assert len(driver.list_domains()) == domains


def test_too_many_networks_are_refused(networks, alice, client_for, settings):
    settings.NICS_PER_VM = 1
    response = create(client_for(alice), networks=["lab", "team"])
    assert response.status_code == 400 and "at most 1 NICs" in response.json()["errors"]["networks"][0]
    assert not VM.objects.exists()


def test_user_data_for_an_image_without_cloud_init_is_refused(networks, alice, client_for):
    response = create(client_for(alice), user_data="#cloud-config\npackages: [nginx]\n")
    assert response.status_code == 400, response.content
    assert "does not take cloud-init" in response.json()["errors"]["user_data"][0]
    bad = create(client_for(alice), user_data="just text")
    assert bad.status_code == 400 and list(bad.json()["errors"]) == ["user_data"]
    assert not VM.objects.exists()


# --- NICs of an existing VM (API) -----------------------------------------------------------------

def test_add_a_nic_to_a_stopped_vm(networks, alice, client_for, driver):
    client = client_for(alice)
    vm = create(client, start=False, networks=[]).json()["vm"]
    added = client.post(vm["nics_url"], {"network": "team", "model": "e1000"}, format="json")
    assert added.status_code == 202, added.content
    body = added.json()
    assert body["job"]["kind"] == "vm.nic.add" and body["message"] == "Adding a NIC on team to web-1."
    assert added["Location"] == body["nic"]["url"]
    assert job_of(client, body)["status"] == "succeeded"

    nic = VMNic.objects.get(vm_id=vm["id"])
    assert (nic.network.name, nic.model, nic.status) == ("team", "e1000", "attached")
    assert MAC_RE.match(nic.mac)
    row = VM.objects.get(pk=vm["id"])
    assert interfaces(driver, row, inactive=True) == [(nic.mac, networks["team"].libvirt_name)]
    listed = client.get(vm["nics_url"]).json()["results"]
    assert [(n["network"], n["mac"], n["model"], n["status"], n["ip_address"]) for n in listed] == [
        ("team", nic.mac, "e1000", "attached", None)]
    assert client.get(f"{vm['nics_url']}{nic.mac}/").json()["id"] == nic.pk


def test_add_a_nic_with_a_used_mac_or_an_unusable_network_is_a_field_error(networks, alice, bob, client_for):
    client = client_for(alice)
    vm = create(client, start=False).json()["vm"]
    used = vm["nics"][0]["mac"]
    taken = client.post(vm["nics_url"], {"network": "lab", "mac": used.upper()}, format="json")
    assert taken.status_code == 400, taken.content
    assert taken.json()["errors"] == {"mac": [f"The MAC {used} is already used by another NIC."]}
    bad_mac = client.post(vm["nics_url"], {"network": "lab", "mac": "01:00:5e:00:00:01"}, format="json")
    assert bad_mac.status_code == 400 and "multicast" in bad_mac.json()["errors"]["mac"][0]
    forbidden = client.post(vm["nics_url"], {"network": "secret"}, format="json")
    assert forbidden.status_code == 400 and list(forbidden.json()["errors"]) == ["network"]
    bad_model = client.post(vm["nics_url"], {"network": "lab", "model": "ne2k"}, format="json")
    assert bad_model.status_code == 400 and list(bad_model.json()["errors"]) == ["model"]
    assert VMNic.objects.filter(vm_id=vm["id"]).count() == 1
    assert not Job.objects.filter(kind="vm.nic.add").exists()
    assert client_for(bob).get(vm["nics_url"]).status_code == 404  # someone else's VM


def test_remove_a_nic_from_a_stopped_vm(networks, alice, client_for, driver):
    client = client_for(alice)
    vm = create(client, start=False, networks=["lab", "team"]).json()["vm"]
    first, second = vm["nics"]
    removed = client.delete(first["url"])
    assert removed.status_code == 202, removed.content
    assert removed.json()["job"]["kind"] == "vm.nic.remove"
    assert job_of(client, removed.json())["status"] == "succeeded"
    assert list(VMNic.objects.filter(vm_id=vm["id"]).values_list("mac", flat=True)) == [second["mac"]]
    row = VM.objects.get(pk=vm["id"])
    assert interfaces(driver, row, inactive=True) == [(second["mac"], networks["team"].libvirt_name)]
    assert client.delete(first["url"]).status_code == 404


def test_hot_plug_on_a_driver_without_it_fails_cleanly(networks, alice, client_for, driver):
    client = client_for(alice)
    vm = create(client, networks=[]).json()["vm"]  # running, on the test driver (no hot-plug)
    added = client.post(vm["nics_url"], {"network": "lab"}, format="json")
    assert added.status_code == 202
    job = job_of(client, added.json())
    assert job["status"] == "failed" and "stop the VM" in job["error"]
    assert not VMNic.objects.filter(vm_id=vm["id"]).exists()  # nothing half-added stays
    assert interfaces(driver, VM.objects.get(pk=vm["id"])) == []


# --- the web pages ----------------------------------------------------------------------------------

def test_the_create_form_ticks_the_default_network_and_unticked_means_no_nic(networks, alice, client):
    client.force_login(alice)
    html = client.get("/vms/new/").content.decode()
    lab, team, secret = networks["lab"], networks["team"], networks["secret"]
    assert re.search(rf'name="networks" value="{lab.pk}"\s+checked', html)
    assert re.search(rf'name="networks" value="{team.pk}">', html)  # offered, not ticked
    assert f'name="networks" value="{secret.pk}"' not in html  # (a bare value="20" also matches a quota cell)
    assert 'name="networks_shown"' in html and 'name="user_data"' in html

    response = client.post("/vms/new/", {"name": "web-1", **SMALL, "networks_shown": "1"})
    assert response.status_code == 302, response.content
    assert not VM.objects.get(name="web-1").nics.exists()
    client.post("/vms/new/", {"name": "web-2", **SMALL, "networks_shown": "1", "networks": [lab.pk, team.pk]})
    assert list(VM.objects.get(name="web-2").nics.values_list("network__name", flat=True)) == ["lab", "team"]
    client.post("/vms/new/", {"name": "web-3", **SMALL})  # no network section posted: the default
    assert list(VM.objects.get(name="web-3").nics.values_list("network__name", flat=True)) == ["lab"]


def test_the_create_form_shows_network_and_user_data_errors_next_to_their_fields(networks, bob, client):
    client.force_login(bob)
    response = client.post("/vms/new/", {"name": "web-1", **SMALL, "networks_shown": "1",
                                         "networks": [networks["secret"].pk]})
    assert response.status_code == 400
    html = response.content.decode()
    error = re.search(r'<div class="field-error" id="networks-error"[^>]*>(.*?)</div>', html, re.S)
    assert error and "You may not use the network" in error.group(1)
    assert not VM.objects.exists()

    response = client.post("/vms/new/", {"name": "web-1", **SMALL, "networks_shown": "1",
                                         "user_data": "#cloud-config\nruncmd: [ls]\n"})
    assert response.status_code == 400
    html = response.content.decode()
    error = re.search(r'<div class="field-error" id="user_data-error"[^>]*>(.*?)</div>', html, re.S)
    assert error and "does not take cloud-init" in error.group(1)
    assert "#cloud-config\nruncmd: [ls]" in html  # what was typed stays, in an open section
    assert re.search(r'<details class="field advanced" open>', html)


def test_the_vm_page_has_a_network_panel_with_the_ssh_line(networks, alice, client_for, client, ssh_login):
    vm_id = create(client_for(alice), networks=["lab", "team"]).json()["vm"]["id"]
    vm = VM.objects.get(pk=vm_id)
    first, second = vm.nics.order_by("created_at", "id")
    client.force_login(alice)

    html = client.get(f"/vms/{vm_id}/").content.decode()
    assert 'id="network"' in html and f'data-nics-panel="{vm_id}"' in html
    assert first.mac in html and second.mac in html and html.count("Waiting for a DHCP lease…") == 2
    assert "data-ssh-command" not in html and "appears here once the VM has an address" in html
    assert 'data-nic-action="add"' in html and html.count('data-nic-action="remove"') == 2

    VMNic.objects.filter(pk=first.pk).update(ip_address="10.77.0.23")  # what the monitor writes from a lease
    html = client.get(f"/vms/{vm_id}/").content.decode()
    assert 'value="ssh debian@10.77.0.23"' in html and "data-copy=" in html
    assert "10.77.0.23" in html and html.count("Waiting for a DHCP lease…") == 1
    panel = client.get(f"/vms/{vm_id}/nics/")
    assert panel.status_code == 200 and "ssh debian@10.77.0.23" in panel.content.decode()
    assert client_for(alice).get(f"/api/vms/{vm_id}/").json()["ssh"] == "ssh debian@10.77.0.23"

    listing = client.get("/").content.decode()
    assert re.search(r"data-vm-address>10\.77\.0\.23<", listing)


def test_a_stopped_vm_shows_no_address_and_the_panel_adds_and_removes_nics(networks, alice, client_for, client):
    vm_id = create(client_for(alice), start=False, networks=["lab"]).json()["vm"]["id"]
    client.force_login(alice)
    html = client.get(f"/vms/{vm_id}/").content.decode()
    assert "Waiting for a DHCP lease" not in html
    assert re.search(r'data-nic-address><span class="muted">—</span>', html)

    response = client.post(f"/vms/{vm_id}/nics/", {"network": "team", "model": "virtio"})
    assert response.status_code == 302 and response["Location"].endswith(f"/vms/{vm_id}/#network")
    nics = list(VMNic.objects.filter(vm_id=vm_id).order_by("created_at", "id"))
    assert [(n.network.name, n.status) for n in nics] == [("lab", "attached"), ("team", "attached")]

    response = client.post(f"/vms/{vm_id}/nics/{nics[0].pk}/remove/")
    assert response.status_code == 302
    assert list(VMNic.objects.filter(vm_id=vm_id).values_list("network__name", flat=True)) == ["team"]

    client.post(f"/vms/{vm_id}/nics/", {"network": "secret"}, HTTP_REFERER=f"/vms/{vm_id}/")
    page = client.get(f"/vms/{vm_id}/").content.decode()
    assert "You may not use the network secret." in page
    assert VMNic.objects.filter(vm_id=vm_id).count() == 1


def test_live_state_carries_a_nic_fingerprint_and_the_address(networks, alice, client_for, client):
    vm_id = create(client_for(alice), networks=["lab"]).json()["vm"]["id"]
    client.force_login(alice)
    before = client.get("/vms/status.json").json()["vms"][0]
    assert before["address"] == "" and before["nics"]
    html = client.get(f"/vms/{vm_id}/").content.decode()
    assert f'data-nics-sig="{before["nics"]}"' in html  # the panel and the stream agree

    VMNic.objects.filter(vm_id=vm_id).update(ip_address="10.77.0.23")
    after = client.get("/vms/status.json").json()["vms"][0]
    assert after["address"] == "10.77.0.23" and after["nics"] != before["nics"]
