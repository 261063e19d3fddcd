"""A chosen host address (gateway) and DNS servers on isolated/NAT networks: validation, the libvirt XML on
the test driver, updates, and the API and CLI doors (the real qemu:///system check is in
test_qemu_networks.py)."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import pytest
from django.core.management import CommandError, call_command

from networks import services
from networks.models import Network
from networks.validation import plan_addresses, validate_dns_servers
from portal.exceptions import ValidationFailed
from portal.hypervisor import get_driver

pytestmark = pytest.mark.django_db(transaction=True)
URI = "test:///default"


def xml_of(network: Network) -> ET.Element:
    return ET.fromstring(get_driver(URI).network_xml_desc(network.libvirt_name))


@pytest.mark.parametrize("gateway, start, end, message", [
    ("10.9.0.0", None, None, "is not a usable address of 10.9.0.0/24"),
    ("10.9.1.1", None, None, "is not a usable address of 10.9.0.0/24"),
    ("10.9.0.50", "10.9.0.10", "10.9.0.100", "lies inside the DHCP range"),
    ("10.9.0.10", "10.9.0.10", "10.9.0.100", "is the host's own address"),
    ("nonsense", None, None, "is not an IPv4 address"),
])
def test_a_host_address_outside_the_subnet_or_in_the_dhcp_range_is_refused(gateway, start, end, message):
    with pytest.raises(ValidationFailed, match=message):
        plan_addresses("10.9.0.0/24", start, end, gateway)


def test_the_default_dhcp_range_keeps_clear_of_a_chosen_host_address():
    high = plan_addresses("10.9.0.0/24", gateway="10.9.0.254")
    assert (str(high.gateway), str(high.dhcp_start), str(high.dhcp_end)) == ("10.9.0.254", "10.9.0.10", "10.9.0.253")
    low = plan_addresses("10.9.0.0/24", gateway="10.9.0.20")
    assert (str(low.dhcp_start), str(low.dhcp_end)) == ("10.9.0.21", "10.9.0.254")
    assert str(plan_addresses("10.9.0.0/24").gateway) == "10.9.0.1"


def test_dns_servers_are_checked():
    assert validate_dns_servers("192.0.2.53, 198.51.100.53 192.0.2.53") == ["192.0.2.53", "198.51.100.53"]
    assert validate_dns_servers(["2001:db8::53"]) == ["2001:db8::53"]
    assert validate_dns_servers(None) == []
    for bad in (["dns.example.org"], ["0.0.0.0"], ["224.0.0.1"], [f"192.0.2.{i}" for i in range(1, 10)]):
        with pytest.raises(ValidationFailed) as refused:
            validate_dns_servers(bad)
        assert refused.value.errors.keys() == {"dns_servers"}


def test_create_and_update_carry_them_into_libvirt(test_host, admin_user):
    net = services.network_create(actor=admin_user, via="cli", name="gw", cidr="10.191.0.0/24",
                                  gateway="10.191.0.254", dhcp_start="10.191.0.20", dhcp_end="10.191.0.99",
                                  dns_servers=["192.0.2.53", "198.51.100.53"], hosts=[test_host])
    assert (net.gateway, net.dns_servers) == ("10.191.0.254", ["192.0.2.53", "198.51.100.53"])
    root = xml_of(net)
    assert root.find("ip").get("address") == "10.191.0.254"
    assert [f.get("addr") for f in root.findall("dns/forwarder")] == ["192.0.2.53", "198.51.100.53"]

    services.network_update(actor=admin_user, via="cli", network=net, dns_servers=[])
    assert xml_of(net).find("dns") is None and Network.objects.get(pk=net.pk).dns_servers == []
    # A new subnet without a host address: the first one of the new subnet (not the old .254).
    services.network_update(actor=admin_user, via="cli", network=net, cidr="10.192.0.0/24", dhcp_start=None,
                            dhcp_end=None)
    net.refresh_from_db()
    assert net.gateway == "10.192.0.1" and xml_of(net).find("ip").get("address") == "10.192.0.1"
    # Bridged networks have neither.
    with pytest.raises(ValidationFailed, match="get their DNS servers from the bridge"):
        services.network_create(actor=admin_user, via="cli", name="br", mode="bridge", bridge="br0",
                                dns_servers=["192.0.2.53"])
    get_driver(URI).remove_network(net.libvirt_name)


def test_api_and_cli_accept_and_show_them(test_host, admin_user, client_for):
    api = client_for(admin_user)
    made = api.post("/api/networks/", {"name": "apigw", "cidr": "10.193.0.0/24", "gateway": "10.193.0.200",
                                       "dhcp_start": "10.193.0.10", "dhcp_end": "10.193.0.100",
                                       "dns_servers": ["192.0.2.1"], "hosts": ["testhost"]}, format="json")
    assert made.status_code == 201, made.content
    assert (made.json()["gateway"], made.json()["dns_servers"]) == ("10.193.0.200", ["192.0.2.1"])
    bad = api.post("/api/networks/", {"name": "apigw2", "cidr": "10.194.0.0/24", "gateway": "10.194.0.50",
                                      "dhcp_start": "10.194.0.10", "dhcp_end": "10.194.0.100"},
                   format="json")
    assert bad.status_code == 400 and "gateway" in bad.json()["errors"]
    changed = api.patch(f"/api/networks/{made.json()['id']}/", {"dns_servers": ["192.0.2.2", "192.0.2.3"]},
                        format="json")
    assert changed.status_code == 200 and changed.json()["dns_servers"] == ["192.0.2.2", "192.0.2.3"]

    out = io.StringIO()
    call_command("network", "--user", admin_user.username, "create", "cligw", "--cidr", "10.195.0.0/24",
                 "--gateway", "10.195.0.254", "--dns", "192.0.2.53", "--dns", "192.0.2.54", "--host", "testhost",
                 stdout=out)
    call_command("network", "--user", admin_user.username, "show", "cligw", stdout=out)
    assert "host address   10.195.0.254" in out.getvalue() and "DNS servers    192.0.2.53, 192.0.2.54" in out.getvalue()
    with pytest.raises(CommandError, match="not an IP address"):
        call_command("network", "--user", admin_user.username, "create", "clibad", "--cidr", "10.196.0.0/24",
                     "--dns", "resolver")
    for name in ("apigw", "cligw"):
        get_driver(URI).remove_network(Network.objects.get(name=name).libvirt_name)
