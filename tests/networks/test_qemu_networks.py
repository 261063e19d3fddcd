"""Networks on a real hypervisor: busybox guests on an isolated network, inside a network namespace.

The guests run on a libvirtd inside a network namespace the tests create (`ns_host`), so their
bridge, dnsmasq and traffic never leave it. Two guests share one test (boots are the slow part):
leases, the portal's addresses, ping both ways on their serial consoles, then NIC hot-plug and
hot-unplug seen from the guest and in libvirt's live XML.
"""

from __future__ import annotations

import time

import pytest

from networks.services import network_create
from portal.hypervisor import domain_xml, get_driver
from portal.models import Job
from tests.guest_shell import GuestShell
from vms import services
from vms.choices import VMStatus
from vms.models import VM, VMNic
from vms.reconcile import nic_addresses_refresh

pytestmark = [pytest.mark.qemu, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]


def wait_for(what, check, timeout=300.0, interval=1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_two_guests_get_leases_ping_each_other_and_nics_hot_plug(ns_host, ns_guest_image, admin_user, alice):
    network_create(actor=admin_user, via="cli", name="lab", cidr="10.131.0.0/24", hosts=[ns_host], is_public=True)
    created = [services.vm_create(actor=alice, via="cli", name=name, image=ns_guest_image, vcpus=1, memory_mib=128,
                                  disk_gib=1, networks=["lab"]) for name in ("ping-a", "ping-b")]
    vms = [VM.objects.get(pk=r.vm.pk) for r in created]
    assert all(vm.host == ns_host and vm.status == VMStatus.RUNNING for vm in vms), [v.status for v in vms]

    def addresses():
        nic_addresses_refresh(host=ns_host)  # what the monitor does on every reconcile
        ips = list(VMNic.objects.filter(vm__in=vms).order_by("vm__name").values_list("ip_address", flat=True))
        return ips if all(ips) else None

    ip_a, ip_b = wait_for("both guests' DHCP leases", addresses, timeout=600)
    assert ip_a != ip_b and ip_a.startswith("10.131.0.") and ip_b.startswith("10.131.0.")

    shells = [GuestShell(ns_host.uri, str(vm.uuid)) for vm in vms]
    try:
        for shell in shells:
            shell.wait_ready(timeout=300)
        for shell, peer in ((shells[0], ip_b), (shells[1], ip_a)):
            result = shell.run(f"ping -c 3 -W 3 {peer}", timeout=60)
            assert result.status == 0 and " 0% packet loss" in result.output, result.output

        # Hot-plug a second NIC into the running guest a: in the guest and in the live XML.
        vm = vms[0]
        nic, job, _ = services.vm_nic_add(actor=alice, via="cli", vm=vm, network="lab")
        assert Job.objects.get(pk=job.pk).status == "succeeded", Job.objects.get(pk=job.pk).error
        live = domain_xml.parse_interfaces(get_driver(ns_host.uri).domain_xml(str(vm.uuid)))
        assert nic.mac in [i.mac for i in live]
        wait_for("the new NIC in the guest", lambda: nic.mac in shells[0].run("ip link").output.lower(), timeout=60)

        _, job, _ = services.vm_nic_remove(actor=alice, via="cli", vm=vm, nic=nic.pk)
        assert Job.objects.get(pk=job.pk).status == "succeeded", Job.objects.get(pk=job.pk).error
        assert Job.objects.get(pk=job.pk).result.get("released") is True
        live = domain_xml.parse_interfaces(get_driver(ns_host.uri).domain_xml(str(vm.uuid)))
        assert nic.mac not in [i.mac for i in live]
        assert nic.mac not in shells[0].run("ip link").output.lower()
    finally:
        for shell in shells:
            shell.close()
    for vm in vms:
        services.vm_delete(actor=alice, via="cli", vm=vm)
    assert not VMNic.objects.exists()


def test_bridged_networks_need_an_existing_bridge_on_each_host(ns_host, ns_hypervisor, admin_user):
    from networks.models import Network
    from portal.exceptions import ValidationFailed

    with pytest.raises(ValidationFailed, match=f"Host {ns_host.name} has no bridge named nobr0"):
        network_create(actor=admin_user, via="cli", name="lan", mode="bridge", bridge="nobr0", hosts=[ns_host])
    assert not Network.objects.exists()
    assert ns_hypervisor.exec(["ip", "link", "add", "br-test", "type", "bridge"], timeout=10).returncode == 0
    try:
        net = network_create(actor=admin_user, via="cli", name="lan", mode="bridge", bridge="br-test",
                             hosts=[ns_host])
        info = get_driver(ns_host.uri).network_info(net.libvirt_name)
        assert info.active and info.bridge == "br-test"
    finally:
        ns_hypervisor.exec(["ip", "link", "del", "br-test"], timeout=10)


def test_a_chosen_host_address_and_dns_forwarders_are_accepted_by_real_libvirt(qemu_host, admin_user):
    """No guest boots: libvirt on qemu:///system takes the network (dnsmasq starts) and its XML shows
    the host address that is not the subnet's first one and the DNS forwarders."""
    import subprocess
    import xml.etree.ElementTree as ET

    from networks.services import network_delete, network_update
    from tests.conftest import QEMU_URI

    net = network_create(actor=admin_user, via="cli", name="gwdns", cidr="10.233.77.0/24", gateway="10.233.77.254",
                         dhcp_start="10.233.77.20", dhcp_end="10.233.77.99",
                         dns_servers=["192.0.2.53", "198.51.100.53"], hosts=[qemu_host])
    try:
        def dumped():
            out = subprocess.run(["virsh", "-c", QEMU_URI, "net-dumpxml", net.libvirt_name], capture_output=True,
                                 text=True, timeout=60, check=True).stdout
            return ET.fromstring(out)

        root = dumped()
        assert root.find("ip").get("address") == "10.233.77.254"
        assert root.find("ip").get("prefix") == "24" or root.find("ip").get("netmask") == "255.255.255.0"
        rng = root.find("ip/dhcp/range")
        assert (rng.get("start"), rng.get("end")) == ("10.233.77.20", "10.233.77.99")
        assert [f.get("addr") for f in root.findall("dns/forwarder")] == ["192.0.2.53", "198.51.100.53"]
        assert get_driver(qemu_host.uri).network_info(net.libvirt_name).active

        # A change of DNS servers alone redefines it (no NIC uses it), and it runs again.
        network_update(actor=admin_user, via="cli", network=net, dns_servers=["203.0.113.53"])
        assert [f.get("addr") for f in dumped().findall("dns/forwarder")] == ["203.0.113.53"]
        assert get_driver(qemu_host.uri).network_info(net.libvirt_name).active
    finally:
        network_delete(actor=admin_user, via="cli", network=net)
