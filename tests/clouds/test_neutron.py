"""Neutron networks mirrored as portal networks (clouds.neutron), against the harness's real Neutron API:
import field by field, defined on the host, differences after a change in Neutron, re-sync on request,
deletions reported and never applied, overlapping subnets refused with nothing created."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

import pytest

from clouds import neutron
from clouds.models import Cloud, NeutronLink
from clouds.services import cloud_create
from networks.models import Network
from networks.services import network_create
from portal.exceptions import Conflict, ValidationFailed
from portal.hypervisor import get_driver
from portal.models import AuditEvent
from vms import services as vm_services

URI = "test:///default"


@pytest.fixture(autouse=True)
def _test_driver_networks():
    """The test driver keeps libvirt networks for the whole process: remove this test's."""
    from tests.conftest import _cleanup_networks

    yield
    _cleanup_networks(URI)


@pytest.fixture
def cloud(admin_user, neutron_server) -> Cloud:
    return cloud_create(actor=admin_user, via="cli", name="os-local", auth_type="none",
                        network_endpoint=neutron_server.url)


@pytest.fixture
def os_net(neutron_server):
    """Make Neutron networks with subnets through openstacksdk; all removed again after the test."""
    conn = neutron_server.connection()
    made = []

    def make(name: str, *subnets: dict, description: str = ""):
        net = conn.network.create_network(name=name, description=description)
        made.append(net.id)
        out = [conn.network.create_subnet(network_id=net.id, **({"ip_version": 4} | s)) for s in subnets]
        return net, out

    yield conn, make
    for net_id in made:
        if conn.network.find_network(net_id) is not None:
            for subnet in conn.network.subnets(network_id=net_id):
                conn.network.delete_subnet(subnet)
            conn.network.delete_network(net_id)


def lab_subnet(prefix: str) -> dict:
    """A subnet whose gateway is not the first address, with two DNS servers and two allocation pools."""
    return {"name": f"{prefix}-v4", "cidr": f"{prefix}.0/24", "gateway_ip": f"{prefix}.254",
            "allocation_pools": [{"start": f"{prefix}.50", "end": f"{prefix}.99"},
                                 {"start": f"{prefix}.150", "end": f"{prefix}.160"}],
            "dns_nameservers": ["192.0.2.53", "198.51.100.53"], "enable_dhcp": True}


def libvirt_xml(network: Network) -> ET.Element:
    return ET.fromstring(get_driver(URI).network_xml_desc(network.libvirt_name))


def test_import_mirrors_the_subnet_field_by_field_and_defines_it_on_the_host(admin_user, test_host, cloud, os_net):
    conn, make = os_net
    name = f"lab-{uuid.uuid4().hex[:6]}"
    net, (v4, v6) = make(name, lab_subnet("10.171.0"),
                         {"ip_version": 6, "cidr": "fd00:171::/64", "name": "v6"}, description="The lab's LAN")

    listed = {n.id: n for n in neutron.neutron_networks(actor=admin_user, cloud=cloud)}
    assert listed[net.id].mirrored_by is None
    assert [s.cidr for s in listed[net.id].ipv4_subnets] == ["10.171.0.0/24"]
    assert listed[net.id].not_mirrored == ["IPv6 subnet v6 (fd00:171::/64) is not mirrored"]

    link = neutron.neutron_import(actor=admin_user, via="cli", cloud=cloud, neutron_network_id=net.id, mode="nat",
                                  hosts=[test_host.name], is_public=True)
    network = Network.objects.get(pk=link.network_id)
    assert (network.name, network.title, network.description, network.mode) == (name, name, "The lab's LAN", "nat")
    assert network.cidr == v4.cidr == "10.171.0.0/24"
    assert network.gateway == v4.gateway_ip == "10.171.0.254"
    assert (network.dhcp_start, network.dhcp_end) == ("10.171.0.50", "10.171.0.99")
    assert network.dns_servers == v4.dns_nameservers == ["192.0.2.53", "198.51.100.53"]
    assert network.is_public
    assert (link.neutron_network_id, link.neutron_subnet_id, link.neutron_name, link.state) == \
        (net.id, v4.id, name, "in_sync")
    assert any("2 allocation pools" in n and "10.171.0.50–10.171.0.99" in n and "10.171.0.150–10.171.0.160" in n
               for n in link.notes), link.notes
    assert any("IPv6" in n for n in link.notes)

    # Defined and running on the host, with the host address, range and forwarders from Neutron.
    assert get_driver(URI).network_info(network.libvirt_name).active
    root = libvirt_xml(network)
    assert root.find("ip").get("address") == "10.171.0.254"
    assert (root.find("ip/dhcp/range").get("start"), root.find("ip/dhcp/range").get("end")) == \
        ("10.171.0.50", "10.171.0.99")
    assert [f.get("addr") for f in root.findall("dns/forwarder")] == ["192.0.2.53", "198.51.100.53"]
    assert AuditEvent.objects.filter(action="cloud.neutron.import", target_name=name).exists()
    assert AuditEvent.objects.filter(action="network.create", target_name=name).exists()

    # Listed as mirrored; a second import of the same Neutron network is refused.
    listed = {n.id: n for n in neutron.neutron_networks(actor=admin_user, cloud=cloud)}
    assert listed[net.id].mirrored_by == network
    with pytest.raises(Conflict, match=f"already mirrored by the portal network {name}"):
        neutron.neutron_import(actor=admin_user, via="cli", cloud=cloud, neutron_network_id=net.id, name="again")
    assert neutron.mirror_text(network).startswith(f"Neutron os-local:{name}")


def test_a_change_in_neutron_shows_as_differences_and_sync_applies_it(admin_user, test_host, cloud, os_net):
    conn, make = os_net
    net, (v4,) = make(f"sync-{uuid.uuid4().hex[:6]}", lab_subnet("10.172.0"))
    link = neutron.neutron_import(actor=admin_user, via="cli", cloud=cloud, neutron_network_id=net.id,
                                  hosts=[test_host])
    network = link.network
    conn.network.update_subnet(v4, dns_nameservers=["203.0.113.53"],
                               allocation_pools=[{"start": "10.172.0.60", "end": "10.172.0.120"}])
    conn.network.update_network(net, description="changed in Neutron")

    report = neutron.neutron_diff(actor=admin_user, cloud=cloud)
    (mine,) = [r for r in report.links if r.link.pk == link.pk]
    assert mine.state == "differs"
    assert {d["field"]: (d["portal"], d["neutron"]) for d in mine.differences} == {
        "description": ("", "changed in Neutron"),
        "dns_servers": (["192.0.2.53", "198.51.100.53"], ["203.0.113.53"]),
        "dhcp_start": ("10.172.0.50", "10.172.0.60"),
        "dhcp_end": ("10.172.0.99", "10.172.0.120"),
    }
    link.refresh_from_db()
    assert link.state == "differs" and len(link.differences) == 4 and link.checked_at is not None
    network.refresh_from_db()
    assert network.dns_servers == ["192.0.2.53", "198.51.100.53"]  # a diff changes nothing
    assert net.id not in {n.id for n in report.not_mirrored}

    (result,) = neutron.neutron_sync(actor=admin_user, via="cli", cloud=cloud, network=network.name)
    assert result.applied == ["description", "dhcp_end", "dhcp_start", "dns_servers"] and not result.error
    network.refresh_from_db()
    assert (network.dhcp_start, network.dhcp_end, network.dns_servers, network.description) == \
        ("10.172.0.60", "10.172.0.120", ["203.0.113.53"], "changed in Neutron")
    assert network.gateway == "10.172.0.254"
    root = libvirt_xml(network)
    assert [f.get("addr") for f in root.findall("dns/forwarder")] == ["203.0.113.53"]
    assert root.find("ip/dhcp/range").get("start") == "10.172.0.60"
    link.refresh_from_db()
    assert (link.state, link.differences) == ("in_sync", []) and link.synced_at is not None
    assert AuditEvent.objects.filter(action="cloud.neutron.sync", target_name=network.name).exists()


def test_a_network_in_use_keeps_its_addresses_and_others_are_still_synced(admin_user, alice, test_host, cloud,
                                                                          os_net):
    conn, make = os_net
    used, (used_v4,) = make(f"used-{uuid.uuid4().hex[:6]}", lab_subnet("10.173.0"))
    free, (free_v4,) = make(f"free-{uuid.uuid4().hex[:6]}", lab_subnet("10.174.0"))
    used_link = neutron.neutron_import(actor=admin_user, via="cli", cloud=cloud, neutron_network_id=used.id,
                                       hosts=[test_host], is_public=True)
    free_link = neutron.neutron_import(actor=admin_user, via="cli", cloud=cloud, neutron_network_id=free.id,
                                       hosts=[test_host])
    vm = vm_services.vm_create(actor=alice, via="cli", name="web-1", vcpus=1, memory_mib=128, disk_gib=1,
                               networks=[used_link.network.name]).vm
    for subnet in (used_v4, free_v4):
        conn.network.update_subnet(subnet, dns_nameservers=["203.0.113.9"])

    reports = {r.link.pk: r for r in neutron.neutron_sync(actor=admin_user, via="cli", cloud=cloud)}
    assert reports[used_link.pk].state == "differs" and not reports[used_link.pk].applied
    assert f"Not applied to network {used_link.network.name}" in reports[used_link.pk].error
    assert "in use" in reports[used_link.pk].error and "web-1" in reports[used_link.pk].error
    assert reports[free_link.pk].applied == ["dns_servers"] and reports[free_link.pk].state == "in_sync"
    used_link.network.refresh_from_db()
    free_link.network.refresh_from_db()
    assert used_link.network.dns_servers == ["192.0.2.53", "198.51.100.53"]
    assert free_link.network.dns_servers == ["203.0.113.9"]
    used_link.refresh_from_db()
    assert used_link.state == "differs" and used_link.differences[0]["field"] == "dns_servers"
    assert vm.nics.count() == 1


def test_a_network_deleted_in_neutron_is_reported_gone_and_never_applied(admin_user, test_host, cloud, os_net):
    conn, make = os_net
    net, (v4,) = make(f"gone-{uuid.uuid4().hex[:6]}", lab_subnet("10.175.0"))
    link = neutron.neutron_import(actor=admin_user, via="cli", cloud=cloud, neutron_network_id=net.id,
                                  hosts=[test_host])
    network = link.network
    conn.network.delete_subnet(v4)
    conn.network.delete_network(net)

    (mine,) = [r for r in neutron.neutron_diff(actor=admin_user, cloud=cloud).links if r.link.pk == link.pk]
    assert mine.state == "gone" and "deleted in Neutron" in mine.gone
    (synced,) = neutron.neutron_sync(actor=admin_user, via="cli", cloud=cloud, network=network)
    assert synced.state == "gone" and not synced.applied
    link.refresh_from_db()
    assert link.state == "gone" and link.differences[0]["field"] == "gone"
    assert Network.objects.filter(pk=network.pk, cidr="10.175.0.0/24", dhcp_start="10.175.0.50").exists()
    assert get_driver(URI).network_info(network.libvirt_name).active

    neutron.neutron_unlink(actor=admin_user, via="cli", link=link)
    assert not NeutronLink.objects.filter(pk=link.pk).exists() and Network.objects.filter(pk=network.pk).exists()


def test_an_overlapping_subnet_is_refused_and_nothing_is_created(admin_user, test_host, cloud, os_net):
    network_create(actor=admin_user, via="cli", name="campus", cidr="10.176.0.0/16", hosts=[test_host])
    conn, make = os_net
    net, _ = make(f"overlap-{uuid.uuid4().hex[:6]}", {"cidr": "10.176.5.0/24"})
    before = {n.name for n in get_driver(URI).list_networks()}
    with pytest.raises(ValidationFailed, match=r"10.176.5.0/24 overlaps the network campus \(10.176.0.0/16\)"):
        neutron.neutron_import(actor=admin_user, via="cli", cloud=cloud, neutron_network_id=net.id,
                               hosts=[test_host])
    assert list(Network.objects.values_list("name", flat=True)) == ["campus"]
    assert not NeutronLink.objects.exists()
    assert {n.name for n in get_driver(URI).list_networks()} == before


def test_a_network_without_ipv4_subnet_and_unknown_ids_are_clear_errors(admin_user, test_host, cloud, os_net):
    conn, make = os_net
    net, _ = make(f"v6only-{uuid.uuid4().hex[:6]}", {"ip_version": 6, "cidr": "fd00:177::/64"})
    with pytest.raises(ValidationFailed, match="has no IPv4 subnet: import it as bridged"):
        neutron.neutron_import(actor=admin_user, via="cli", cloud=cloud, neutron_network_id=net.id,
                               hosts=[test_host])
    from portal.exceptions import NotFound
    with pytest.raises(NotFound, match="cloud os-local has no such object"):
        neutron.neutron_import(actor=admin_user, via="cli", cloud=cloud, neutron_network_id=str(uuid.uuid4()))
    assert not Network.objects.exists() and not NeutronLink.objects.exists()

    # As bridged (addresses from the bridge's LAN; no host yet) it is mirrored by name and description only.
    link = neutron.neutron_import(actor=admin_user, via="cli", cloud=cloud, neutron_network_id=net.id,
                                  mode="bridge", bridge="br0", name="v6lan")
    assert (link.network.mode, link.network.bridge, link.network.cidr, link.neutron_subnet_id) == \
        ("bridge", "br0", "", "")
    assert any("IPv6 subnet" in n for n in link.notes)
    conn.network.update_network(net, description="now documented")
    (mine,) = neutron.neutron_diff(actor=admin_user, cloud=cloud).links
    assert mine.differences == [{"field": "description", "portal": "", "neutron": "now documented"}]


def test_only_administrators(alice, cloud):
    from portal.exceptions import PermissionDenied
    with pytest.raises(PermissionDenied):
        neutron.neutron_networks(actor=alice, cloud=cloud)
    with pytest.raises(PermissionDenied):
        neutron.neutron_import(actor=alice, via="cli", cloud=cloud, neutron_network_id="x")
