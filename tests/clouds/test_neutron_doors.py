"""The doors of Neutron mirroring (REST API, manage.py neutron, admin) against the harness's real Neutron:
each only calls clouds.neutron, so the tests check what each door shows and that refusals are clear 4xx /
exit codes / messages with nothing created."""

from __future__ import annotations

import io
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from clouds.models import NeutronLink
from networks.models import Network
from networks.services import network_create
from portal.hypervisor import get_driver
from tests.clouds.test_neutron import URI, _test_driver_networks, cloud, lab_subnet, os_net  # noqa: F401

BASE = "/api/clouds/{}/neutron/"


def test_api_list_import_diff_sync_unlink(admin_user, alice, test_host, cloud, os_net, client_for):  # noqa: F811
    conn, make = os_net
    name = f"api-{uuid.uuid4().hex[:6]}"
    net, (v4,) = make(name, lab_subnet("10.181.0"))
    api = client_for(admin_user)

    listed = api.get(BASE.format(cloud.name) + "networks/")
    assert listed.status_code == 200, listed.content
    (mine,) = [n for n in listed.json() if n["id"] == net.id]
    assert mine["mirrored_by"] is None and mine["subnets"][0]["gateway_ip"] == "10.181.0.254"
    assert mine["subnets"][0]["mirrorable"] is True

    made = api.post(BASE.format(cloud.pk) + f"networks/{net.id}/import/",
                    {"mode": "isolated", "hosts": [test_host.name], "is_public": True}, format="json")
    assert made.status_code == 201, made.content
    body = made.json()
    assert (body["network"], body["neutron_network_id"], body["state"]) == (name, net.id, "in_sync")
    assert any("2 allocation pools" in n for n in body["notes"])
    detail = api.get(f"/api/networks/{body['network_id']}/").json()
    assert (detail["cidr"], detail["gateway"], detail["dhcp_start"], detail["dhcp_end"], detail["dns_servers"]) == \
        ("10.181.0.0/24", "10.181.0.254", "10.181.0.50", "10.181.0.99", ["192.0.2.53", "198.51.100.53"])
    listed = api.get(BASE.format(cloud.name) + "networks/").json()
    assert [n["mirrored_by"] for n in listed if n["id"] == net.id] == [name]
    # Users see it like any other network they may use (open to all users on import).
    assert name in [n["name"] for n in client_for(alice).get("/api/networks/").json()["results"]]

    conn.network.update_subnet(v4, dns_nameservers=["203.0.113.7"])
    diff = api.get(BASE.format(cloud.name) + "diff/")
    assert diff.status_code == 200
    (report,) = [r for r in diff.json()["links"] if r["link"]["id"] == body["id"]]
    assert report["state"] == "differs"
    assert report["differences"] == [{"field": "dns_servers", "portal": ["192.0.2.53", "198.51.100.53"],
                                      "neutron": ["203.0.113.7"]}]
    synced = api.post(BASE.format(cloud.name) + "sync/", {"network": name}, format="json")
    assert synced.status_code == 200, synced.content
    assert synced.json()[0]["applied"] == ["dns_servers"] and synced.json()[0]["state"] == "in_sync"
    assert Network.objects.get(name=name).dns_servers == ["203.0.113.7"]

    gone = api.delete(BASE.format(cloud.name) + f"links/{body['id']}/")
    assert gone.status_code == 204
    assert not NeutronLink.objects.exists() and Network.objects.filter(name=name).exists()
    assert api.delete(BASE.format(cloud.name) + f"links/{body['id']}/").status_code == 404


def test_api_overlapping_subnet_is_a_clear_400_and_nothing_is_created(admin_user, test_host, cloud,  # noqa: F811
                                                                      os_net, client_for):  # noqa: F811
    network_create(actor=admin_user, via="cli", name="campus", cidr="10.182.0.0/16", hosts=[test_host])
    conn, make = os_net
    net, _ = make(f"ovl-{uuid.uuid4().hex[:6]}", {"cidr": "10.182.7.0/24"})
    before = {n.name for n in get_driver(URI).list_networks()}
    refused = client_for(admin_user).post(BASE.format(cloud.name) + f"networks/{net.id}/import/",
                                          {"hosts": [test_host.name]}, format="json")
    assert refused.status_code == 400, refused.content
    assert "10.182.7.0/24 overlaps the network campus (10.182.0.0/16)." in refused.content.decode()
    assert list(Network.objects.values_list("name", flat=True)) == ["campus"]
    assert not NeutronLink.objects.exists()
    assert {n.name for n in get_driver(URI).list_networks()} == before


def test_api_is_for_administrators_only(alice, cloud, client_for):  # noqa: F811
    api = client_for(alice)
    assert api.get(BASE.format(cloud.name) + "networks/").status_code == 403
    assert api.post(BASE.format(cloud.name) + "sync/", {}, format="json").status_code == 403


def test_cli_networks_import_diff_sync_unlink(admin_user, test_host, cloud, os_net):  # noqa: F811
    conn, make = os_net
    name = f"cli-{uuid.uuid4().hex[:6]}"
    net, (v4,) = make(name, lab_subnet("10.183.0"))
    out = io.StringIO()
    user = ["--user", admin_user.username]
    call_command("neutron", *user, "networks", cloud.name, stdout=out)
    assert f"{net.id}  {name}  not mirrored" in out.getvalue()
    assert "subnet 10.183.0.0/24 gateway 10.183.0.254 pools 10.183.0.50-10.183.0.99,10.183.0.150-10.183.0.160 " \
           "dns 192.0.2.53,198.51.100.53" in out.getvalue()
    call_command("neutron", *user, "import", cloud.name, net.id, "--mode", "nat", "--host", test_host.name,
                 "--name", "cli-lab", stdout=out)
    assert "Imported Neutron network" in out.getvalue() and "as network cli-lab (nat, 10.183.0.0/24)" in out.getvalue()
    assert "note: Subnet 10.183.0.0/24 has 2 allocation pools" in out.getvalue()
    assert Network.objects.get(name="cli-lab").gateway == "10.183.0.254"

    conn.network.update_subnet(v4, allocation_pools=[{"start": "10.183.0.70", "end": "10.183.0.80"}])
    out = io.StringIO()
    call_command("neutron", *user, "diff", cloud.name, stdout=out)
    assert "cli-lab  Differs from Neutron" in out.getvalue()
    assert "dhcp_start: portal '10.183.0.50' → Neutron '10.183.0.70'" in out.getvalue()
    call_command("neutron", *user, "sync", cloud.name, "--network", "cli-lab", stdout=out)
    assert "cli-lab  applied: dhcp_end, dhcp_start" in out.getvalue()
    assert Network.objects.filter(name="cli-lab", dhcp_start="10.183.0.70", dhcp_end="10.183.0.80").exists()

    conn.network.delete_subnet(v4)
    conn.network.delete_network(net)
    out = io.StringIO()
    call_command("neutron", *user, "sync", cloud.name, stdout=out)
    assert "deleted in Neutron" in out.getvalue() and "Not applied" in out.getvalue()
    call_command("neutron", *user, "unlink", cloud.name, "cli-lab", stdout=out)
    assert not NeutronLink.objects.exists() and Network.objects.filter(name="cli-lab").exists()


def test_cli_refusals_have_exit_codes(alice, admin_user, test_host, cloud, os_net):  # noqa: F811
    with pytest.raises(CommandError) as refused:
        call_command("neutron", "--user", alice.username, "networks", cloud.name)
    assert refused.value.returncode == 4
    network_create(actor=admin_user, via="cli", name="campus", cidr="10.184.0.0/16", hosts=[test_host])
    conn, make = os_net
    net, _ = make(f"ovl-{uuid.uuid4().hex[:6]}", {"cidr": "10.184.1.0/24"})
    with pytest.raises(CommandError, match="overlaps the network campus") as invalid:
        call_command("neutron", "--user", admin_user.username, "import", cloud.name, net.id, "--host",
                     test_host.name)
    assert invalid.value.returncode == 2 and not NeutronLink.objects.exists()


def test_admin_cloud_page_import_differences_apply_and_networks_column(admin_user, test_host, cloud,  # noqa: F811
                                                                       os_net):  # noqa: F811
    conn, make = os_net
    name = f"adm-{uuid.uuid4().hex[:6]}"
    net, (v4,) = make(name, lab_subnet("10.185.0"))
    web = Client()
    web.force_login(admin_user)
    page_url = f"/admin/clouds/neutronlink/cloud/{cloud.pk}/"
    page = web.get(page_url)
    html = page.content.decode()
    assert page.status_code == 200 and net.id in html and "10.185.0.0/24" in html and "Import" in html
    listing = web.get("/admin/clouds/neutronlink/").content.decode()
    assert page_url in listing

    done = web.post(page_url, {"do": "import", "neutron_id": net.id, "name": "", "mode": "isolated", "bridge": "",
                               "hosts": [str(test_host.pk)]}, follow=True)
    assert f"Imported as network {name}." in done.content.decode()
    network = Network.objects.get(name=name)
    assert network.gateway == "10.185.0.254"
    networks_list = web.get("/admin/networks/network/").content.decode()
    assert f"Neutron os-local:{name} (In sync)" in networks_list
    filtered = web.get("/admin/networks/network/?neutron=no").content.decode()
    assert f"Neutron os-local:{name}" not in filtered
    assert f"Neutron os-local:{name} (In sync)" in web.get("/admin/networks/network/?neutron=in_sync").content.decode()

    conn.network.update_subnet(v4, dns_nameservers=["203.0.113.8"])
    web.post(page_url, {"do": "diff"})
    html = web.get(page_url).content.decode()
    assert "Differs from Neutron" in html and "203.0.113.8" in html
    link = NeutronLink.objects.get(network=network)
    assert web.get(f"/admin/clouds/neutronlink/{link.pk}/change/").status_code == 200
    change = web.get(f"/admin/networks/network/{network.pk}/change/").content.decode()
    assert 'value="10.185.0.254"' in change and 'value="192.0.2.53, 198.51.100.53"' in change
    applied = web.post("/admin/clouds/neutronlink/", {"action": "apply", "_selected_action": [link.pk]}, follow=True)
    assert f"{name}: applied dns_servers." in [m.message for m in applied.context["messages"]]
    network.refresh_from_db()
    assert network.dns_servers == ["203.0.113.8"]

    # An overlapping import is refused on the page and nothing is created.
    other, _ = make(f"ovl-{uuid.uuid4().hex[:6]}", {"cidr": "10.185.0.128/25"})
    refused = web.post(page_url, {"do": "import", "neutron_id": other.id, "name": "", "mode": "isolated",
                                  "bridge": "", "hosts": [str(test_host.pk)]}, follow=True)
    assert "Nothing was imported: 10.185.0.128/25 overlaps the network" in refused.content.decode()
    assert Network.objects.count() == 1 and NeutronLink.objects.count() == 1


def test_an_import_that_names_no_host_goes_on_every_enabled_host(admin_user, test_host, cloud, os_net,  # noqa: F811
                                                                 client_for):
    """The network is usable at once: without --host / "hosts" it is defined on every enabled host."""
    _conn, make = os_net
    net, _ = make(f"all-{uuid.uuid4().hex[:6]}", lab_subnet("10.186.0"))
    out = io.StringIO()
    call_command("neutron", "--user", admin_user.username, "import", cloud.name, net.id, "--name", "all-hosts",
                 stdout=out)
    assert f"on {test_host.name}." in out.getvalue()
    network = Network.objects.get(name="all-hosts")
    assert list(network.hosts.all()) == [test_host]
    assert network.placements.get().active  # defined and running there

    net2, _ = make(f"none-{uuid.uuid4().hex[:6]}", lab_subnet("10.187.0"))
    made = client_for(admin_user).post(BASE.format(cloud.name) + f"networks/{net2.id}/import/",
                                       {"name": "no-hosts", "hosts": []}, format="json")
    assert made.status_code == 201, made.content
    assert not Network.objects.get(name="no-hosts").hosts.exists()  # an empty list is taken at its word
