"""Networks through the doors users and scripts see: the REST API (/api/networks/) and the read-only
networks page, on libvirt's test driver.

Jobs run on commit (ImmediateBackend), so these tests use a transactional database: a 202 or a
redirect means the job has already run when the test looks at the database and at libvirt.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from networks.models import Network, Reservation
from vms.models import VM, VMNic

pytestmark = pytest.mark.django_db(transaction=True)

SMALL = {"vcpus": 1, "memory_mib": 128, "disk_gib": 1}


@pytest.fixture
def team(alice) -> Group:
    group = Group.objects.create(name="team-a")
    alice.groups.add(group)
    return group


@pytest.fixture
def networks(make_network, team):
    """lab: open to all and the default; team: team-a only; secret: administrators only."""
    return {
        "lab": make_network("lab", "10.77.0.0/24", is_public=True, is_default=True, title="Lab"),
        "team": make_network("team", "10.78.0.0/24", groups=[team], mode="nat", title="Team A"),
        "secret": make_network("secret", "10.79.0.0/24"),
    }


def names(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [n["name"] for n in response.json()["results"]]


# --- what each user sees ------------------------------------------------------------------------

def test_users_see_only_the_networks_they_may_use(networks, alice, bob, admin_user, client_for):
    as_alice, as_bob, as_staff = client_for(alice), client_for(bob), client_for(admin_user)

    assert names(as_alice.get("/api/networks/")) == ["lab", "team"]  # the default first
    assert names(as_bob.get("/api/networks/")) == ["lab"]
    assert names(as_staff.get("/api/networks/")) == ["lab", "secret", "team"]

    lab = as_bob.get("/api/networks/lab/").json()
    assert lab == {**lab, "name": "lab", "title": "Lab", "mode": "isolated", "cidr": "10.77.0.0/24",
                   "is_default": True, "preselected": True}
    assert "hosts" not in lab and "reservations" not in lab and "used_by" not in lab  # staff only
    assert as_bob.get(f"/api/networks/{networks['team'].pk}/").json()["code"] == "not_found"
    assert as_bob.get("/api/networks/secret/").status_code == 404
    assert as_alice.get("/api/networks/team/").json()["preselected"] is False

    staff_view = as_staff.get("/api/networks/team/").json()
    assert staff_view["groups"] == ["team-a"] and staff_view["is_public"] is False
    assert [(h["host"], h["active"]) for h in staff_view["hosts"]] == [("testhost", True)]
    assert staff_view["reservations"] == [] and staff_view["used_by"] == []
    assert staff_view["libvirt_name"].endswith("-net-team")


def test_the_networks_page_lists_usable_networks_with_the_default_marked(networks, alice, bob, client):
    client.force_login(bob)
    page = client.get("/networks/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-network="lab"' in html and "10.77.0.0/24" in html and "Default" in html
    assert 'data-network="team"' not in html and 'data-network="secret"' not in html
    assert 'href="/networks/"' in html  # in the navigation

    client.force_login(alice)
    html = client.get("/networks/").content.decode()
    assert 'data-network="team"' in html and "NAT" in html and 'data-network="secret"' not in html


def test_the_networks_page_says_so_when_no_network_is_open(make_network, bob, client):
    make_network("secret", "10.79.0.0/24")
    client.force_login(bob)
    html = client.get("/networks/").content.decode()
    assert "No networks are open to you" in html and 'data-network="secret"' not in html


def test_anonymous_users_are_sent_to_log_in(client):
    assert client.get("/networks/").status_code == 302
    assert APIClient().get("/api/networks/").status_code == 401


def test_the_api_root_lists_networks(alice, client_for):
    assert client_for(alice).get("/api/").json()["networks"].endswith("/api/networks/")


# --- administrators' writes -----------------------------------------------------------------------

def test_only_staff_write_networks(networks, alice, client_for):
    as_alice = client_for(alice)
    created = as_alice.post("/api/networks/", {"name": "mine", "cidr": "10.90.0.0/24"}, format="json")
    assert created.status_code == 403, created.content
    assert created.json()["detail"] == "Only administrators change networks."
    assert as_alice.patch("/api/networks/lab/", {"title": "x"}, format="json").status_code == 403
    assert as_alice.delete("/api/networks/lab/").status_code == 403
    reserve = as_alice.post("/api/networks/lab/reservations/", {"mac": "52:54:00:00:00:01", "ip": "10.77.0.5"},
                            format="json")
    assert reserve.status_code == 403
    assert as_alice.get("/api/networks/lab/reservations/").status_code == 403
    assert not Network.objects.filter(name="mine").exists()
    assert Network.objects.get(name="lab").title == "Lab"


def test_staff_create_checks_the_range_and_defines_the_network_on_its_hosts(networks, admin_user, client_for,
                                                                             driver):
    as_staff = client_for(admin_user)
    overlap = as_staff.post("/api/networks/", {"name": "lab2", "cidr": "10.77.0.128/25", "hosts": ["testhost"]},
                            format="json")
    assert overlap.status_code == 400, overlap.content
    assert overlap.json()["code"] == "invalid"
    assert "overlaps the network lab" in overlap.json()["errors"]["cidr"][0]
    bad_mode = as_staff.post("/api/networks/", {"name": "lab2", "mode": "wifi"}, format="json")
    assert bad_mode.status_code == 400 and "mode" in bad_mode.json()["errors"]

    created = as_staff.post("/api/networks/", {"name": "lab2", "cidr": "10.80.0.0/24", "hosts": ["testhost"],
                                               "groups": ["team-a"], "title": "Second lab"}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert created["Location"] == body["url"]
    assert (body["cidr"], body["dhcp_start"], body["dhcp_end"]) == ("10.80.0.0/24", "10.80.0.10", "10.80.0.254")
    assert body["groups"] == ["team-a"] and [h["host"] for h in body["hosts"]] == ["testhost"]
    network = Network.objects.get(name="lab2")
    assert network.libvirt_name in {n.name for n in driver.list_networks() if n.active}


def test_staff_change_and_delete_a_network_refused_while_a_nic_uses_it(networks, alice, admin_user, client_for,
                                                                       driver):
    as_staff, as_alice = client_for(admin_user), client_for(alice)
    vm = as_alice.post("/api/vms/", {"name": "web-1", **SMALL, "networks": ["team"]}, format="json").json()["vm"]

    changed = as_staff.patch("/api/networks/team/", {"title": "Team A net", "is_public": True}, format="json")
    assert changed.status_code == 200, changed.content
    assert (changed.json()["title"], changed.json()["is_public"]) == ("Team A net", True)
    assert changed.json()["used_by"] == ["web-1 (alice)"]
    reshaped = as_staff.patch("/api/networks/team/", {"cidr": "10.81.0.0/24"}, format="json")
    assert reshaped.status_code == 409 and reshaped.json()["code"] == "conflict"
    assert Network.objects.get(name="team").cidr == "10.78.0.0/24"

    in_use = as_staff.delete("/api/networks/team/")
    assert in_use.status_code == 409, in_use.content
    assert in_use.json()["code"] == "conflict" and "web-1 (alice)" in in_use.json()["detail"]
    assert Network.objects.filter(name="team").exists()

    assert as_alice.delete(f"/api/vms/{vm['id']}/").status_code == 202
    assert not VMNic.objects.filter(vm_id=vm["id"]).exists()
    libvirt_name = Network.objects.get(name="team").libvirt_name
    assert as_staff.delete("/api/networks/team/").status_code == 204
    assert not Network.objects.filter(name="team").exists()
    assert libvirt_name not in {n.name for n in driver.list_networks()}


def test_staff_reserve_and_release_addresses(networks, admin_user, client_for):
    as_staff = client_for(admin_user)
    base = "/api/networks/lab/reservations/"
    made = as_staff.post(base, {"mac": "52:54:00:AA:00:01", "ip": "10.77.0.5", "hostname": "db"}, format="json")
    assert made.status_code == 201, made.content
    body = made.json()
    assert (body["mac"], body["ip"], body["hostname"]) == ("52:54:00:aa:00:01", "10.77.0.5", "db")
    taken = as_staff.post(base, {"mac": "52:54:00:aa:00:02", "ip": "10.77.0.5"}, format="json")
    assert taken.status_code == 400 and "ip" in taken.json()["errors"]
    outside = as_staff.post(base, {"mac": "52:54:00:aa:00:02", "ip": "10.99.0.5"}, format="json")
    assert outside.status_code == 400 and "ip" in outside.json()["errors"]

    assert [r["ip"] for r in as_staff.get(base).json()["results"]] == ["10.77.0.5"]
    assert as_staff.get("/api/networks/lab/").json()["reservations"][0]["mac"] == "52:54:00:aa:00:01"
    assert as_staff.get(body["url"]).json()["ip"] == "10.77.0.5"
    assert as_staff.delete(body["url"]).status_code == 204
    assert not Reservation.objects.exists()
    assert as_staff.delete(body["url"]).status_code == 404


def test_the_schema_describes_the_network_paths(client):
    paths = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()["paths"]
    for path in ("/api/networks/", "/api/networks/{id}/", "/api/networks/{id}/reservations/",
                 "/api/networks/{id}/reservations/{rid}/", "/api/vms/{id}/nics/", "/api/vms/{id}/nics/{nic_id}/"):
        assert path in paths, path
    assert "409" in paths["/api/networks/{id}/"]["delete"]["responses"]
    assert "202" in paths["/api/vms/{id}/nics/"]["post"]["responses"]
    assert not VM.objects.exists()
