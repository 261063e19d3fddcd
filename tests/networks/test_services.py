"""Network and NIC rules on libvirt's test driver: definitions on hosts, access, refusals, nothing half-made."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group

from networks import selectors as net_selectors
from networks import services as net_services
from networks.models import Network, NetworkHost
from portal.exceptions import Conflict, InvalidState, PermissionDenied, ValidationFailed
from portal.hypervisor import domain_xml, get_driver
from portal.models import Job
from vms import selectors, services
from vms.choices import VMStatus
from vms.models import VM, VMNic

pytestmark = pytest.mark.django_db(transaction=True)
URI = "test:///default"


def libvirt_networks():
    return {n.name: n for n in get_driver(URI).list_networks()}


def make_network(admin, host, name="lab", cidr="10.120.0.0/24", **kw):
    kw.setdefault("is_public", True)
    return net_services.network_create(actor=admin, via="cli", name=name, cidr=cidr, hosts=[host], **kw)


def create(user, name="web-1", **kw):
    kw.setdefault("vcpus", 1)
    kw.setdefault("memory_mib", 128)
    kw.setdefault("disk_gib", 1)
    return services.vm_create(actor=user, via="cli", name=name, **kw)


def test_create_defines_and_starts_the_network_on_its_hosts(test_host, admin_user):
    net = make_network(admin_user, test_host, dhcp_start="10.120.0.50", dhcp_end="10.120.0.60")
    info = libvirt_networks()[net.libvirt_name]
    assert info.active and info.autostart
    xml = domain_xml.network_xml(net_services.network_spec(net))
    assert 'address="10.120.0.1"' in xml and 'start="10.120.0.50"' in xml and "<forward" not in xml
    placement = NetworkHost.objects.get(network=net, host=test_host)
    assert placement.active and placement.last_error == ""
    # idempotent: ensuring again changes nothing
    net_services.network_ensure_on_host(network=net, host=test_host)
    assert libvirt_networks()[net.libvirt_name].uuid == info.uuid


@pytest.mark.parametrize("kw, field, words", [
    ({"cidr": "10.120.0.5/24"}, "cidr", "network address"),
    ({"cidr": "8.8.8.0/24"}, "cidr", "private"),
    ({"cidr": "10.0.0.0/30"}, "cidr", "prefix"),
    ({"cidr": "fd00::/64"}, "cidr", "IPv4"),
    ({"dhcp_start": "10.120.0.200", "dhcp_end": "10.120.0.100"}, "dhcp_end", "starts after"),
    ({"dhcp_start": "10.121.0.2", "dhcp_end": "10.121.0.9"}, "dhcp_start", "not a usable address"),
    ({"dhcp_start": "10.120.0.1", "dhcp_end": "10.120.0.9"}, "dhcp_start", "host's own"),
    ({"name": "Bad Name!"}, "name", "lowercase"),
    ({"mode": "bridge", "bridge": "br0"}, "cidr", "leave the address"),
    ({"mode": "nat", "bridge": "br0"}, "bridge", "Only bridged"),
])
def test_bad_network_input_is_refused_and_nothing_is_defined(test_host, admin_user, kw, field, words):
    kw = {"name": "lab", "cidr": "10.120.0.0/24", **kw}
    with pytest.raises(ValidationFailed) as err:
        net_services.network_create(actor=admin_user, via="cli", hosts=[test_host], **kw)
    assert field in err.value.errors and words in err.value.message
    assert not Network.objects.exists()
    assert not [n for n in libvirt_networks() if n.startswith("vmp-net-")]


def test_overlapping_ranges_are_refused(test_host, admin_user):
    make_network(admin_user, test_host, name="aa", cidr="10.120.0.0/16")
    with pytest.raises(ValidationFailed, match="overlaps the network aa"):
        make_network(admin_user, test_host, name="bb", cidr="10.120.7.0/24")
    assert list(Network.objects.values_list("name", flat=True)) == ["aa"]


def test_only_administrators_define_networks(test_host, alice):
    with pytest.raises(PermissionDenied):
        make_network(alice, test_host)


def test_access_by_group_and_the_default_network(test_host, admin_user, alice, bob):
    team = Group.objects.create(name="team")
    alice.groups.add(team)
    open_net = make_network(admin_user, test_host, name="open", cidr="10.120.0.0/24", is_public=True)
    team_net = make_network(admin_user, test_host, name="team", cidr="10.121.0.0/24", is_public=False,
                            groups=[team], is_default=True)
    assert set(net_selectors.network_usable(user=alice)) == {open_net, team_net}
    assert set(net_selectors.network_usable(user=bob)) == {open_net}
    assert net_selectors.network_default_for(user=alice) == team_net
    assert net_selectors.network_default_for(user=bob) == open_net  # his only one
    with pytest.raises(ValidationFailed, match="may not use the network team"):
        create(bob, networks=["team"])
    with pytest.raises(ValidationFailed, match="Unknown network"):
        create(bob, networks=["nope"])
    assert not VM.objects.exists()


def test_vm_gets_nics_with_unique_macs_on_the_default_or_chosen_networks(test_host, admin_user, alice):
    lab = make_network(admin_user, test_host, name="lab", is_default=True)
    other = make_network(admin_user, test_host, name="other", cidr="10.122.0.0/24")
    vm = create(alice).vm
    nics = selectors.vm_nics(vm=vm)
    assert [n.network for n in nics] == [lab]
    vm2 = create(alice, name="web-2", networks=["lab", other.pk]).vm
    macs = [n.mac for n in selectors.vm_nics(vm=vm2)] + [nics[0].mac]
    assert len(set(macs)) == 3 and all(re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", m) for m in macs)
    ifaces = domain_xml.parse_interfaces(get_driver(URI).domain_xml(str(vm2.uuid)))
    assert [(i.mac, i.network) for i in ifaces] == [(n.mac, n.network.libvirt_name) for n in selectors.vm_nics(vm=vm2)]
    vm3 = create(alice, name="web-3", networks=[]).vm
    assert selectors.vm_nics(vm=vm3) == []


def test_a_vm_goes_to_a_host_that_carries_its_networks(test_host, admin_user, alice):
    net = net_services.network_create(actor=admin_user, via="cli", name="nowhere", cidr="10.123.0.0/24",
                                      is_public=True)
    with pytest.raises(Conflict, match="carries the network nowhere"):
        create(alice, networks=["nowhere"])
    assert not VM.objects.exists() and net.placements.count() == 0


def test_a_network_in_use_cannot_be_deleted_or_reshaped_until_its_nics_are_gone(test_host, admin_user, alice):
    net = make_network(admin_user, test_host)
    vm = create(alice, networks=["lab"]).vm
    with pytest.raises(Conflict, match=r"in use by 1 NIC\(s\) \(web-1 \(alice\)\)"):
        net_services.network_delete(actor=admin_user, via="cli", network=net)
    with pytest.raises(Conflict, match="in use"):
        net_services.network_update(actor=admin_user, via="cli", network=net, cidr="10.125.0.0/24",
                                    dhcp_start=None, dhcp_end=None)
    assert net.libvirt_name in libvirt_networks()
    services.vm_delete(actor=alice, via="cli", vm=vm)
    assert not VMNic.objects.exists()  # MACs are free again with the VM
    net_services.network_delete(actor=admin_user, via="cli", network=net)
    assert net.libvirt_name not in libvirt_networks() and not Network.objects.exists()


def test_reservations_are_checked_and_applied(test_host, admin_user):
    net = make_network(admin_user, test_host)
    net_services.reservation_add(actor=admin_user, via="cli", network=net, mac="52:54:00:AA:BB:CC",
                                 ip="10.120.0.5", hostname="db")
    with pytest.raises(ValidationFailed, match="already reserved"):
        net_services.reservation_add(actor=admin_user, via="cli", network=net, mac="52:54:00:aa:bb:cd",
                                     ip="10.120.0.5")
    with pytest.raises(ValidationFailed, match="multicast"):
        net_services.reservation_add(actor=admin_user, via="cli", network=net, mac="01:00:5e:00:00:01",
                                     ip="10.120.0.6")
    with pytest.raises(ValidationFailed, match="not a usable address"):
        net_services.reservation_add(actor=admin_user, via="cli", network=net, mac="52:54:00:aa:bb:ce",
                                     ip="10.99.0.6")
    xml = get_driver(URI).connection().networkLookupByName(net.libvirt_name).XMLDesc(0)
    assert domain_xml.network_dhcp_hosts(xml)[0].ip == "10.120.0.5"


def test_nic_add_with_a_used_mac_or_foreign_network_is_refused(test_host, admin_user, alice, bob):
    make_network(admin_user, test_host, name="lab")
    team = Group.objects.create(name="team")
    make_network(admin_user, test_host, name="private", cidr="10.124.0.0/24", is_public=False, groups=[team])
    vm = create(alice, networks=["lab"], start=False).vm
    used = selectors.vm_nics(vm=vm)[0].mac
    with pytest.raises(ValidationFailed, match="already used"):
        services.vm_nic_add(actor=alice, via="cli", vm=vm, network="lab", mac=used.upper())
    with pytest.raises(ValidationFailed, match="may not use"):
        services.vm_nic_add(actor=alice, via="cli", vm=vm, network="private")
    with pytest.raises(ValidationFailed, match="model"):
        services.vm_nic_add(actor=alice, via="cli", vm=vm, network="lab", model="ne2k")
    assert VMNic.objects.filter(vm=vm).count() == 1


def test_nic_add_and_remove_on_a_stopped_vm_change_its_definition(test_host, admin_user, alice):
    make_network(admin_user, test_host, name="lab")
    vm = create(alice, networks=[], start=False).vm
    nic, job, _ = services.vm_nic_add(actor=alice, via="cli", vm=vm, network="lab", model="e1000")
    assert Job.objects.get(pk=job.pk).status == "succeeded"
    nic.refresh_from_db()
    assert nic.status == VMNic.Status.ATTACHED
    ifaces = domain_xml.parse_interfaces(get_driver(URI).domain_xml(str(vm.uuid), inactive=True))
    assert [(i.mac, i.model) for i in ifaces] == [(nic.mac, "e1000")]
    _, job, _ = services.vm_nic_remove(actor=alice, via="cli", vm=vm, nic=nic.mac)
    assert Job.objects.get(pk=job.pk).status == "succeeded"
    assert not VMNic.objects.filter(pk=nic.pk).exists()
    assert domain_xml.parse_interfaces(get_driver(URI).domain_xml(str(vm.uuid), inactive=True)) == []


def test_hot_plug_on_a_host_without_it_fails_cleanly(test_host, admin_user, alice):
    """libvirt's test driver cannot attach devices: the job fails and nothing half-added stays."""
    make_network(admin_user, test_host, name="lab")
    vm = create(alice, networks=[]).vm
    assert VM.objects.get(pk=vm.pk).status == VMStatus.RUNNING
    _, job, _ = services.vm_nic_add(actor=alice, via="cli", vm=vm, network="lab")
    assert Job.objects.get(pk=job.pk).status == "failed"
    assert not VMNic.objects.filter(vm=vm).exists()


def test_nic_limit_per_vm(test_host, admin_user, alice, settings):
    settings.NICS_PER_VM = 1
    make_network(admin_user, test_host, name="lab")
    vm = create(alice, networks=["lab"], start=False).vm
    with pytest.raises(InvalidState, match="already has 1 NICs"):
        services.vm_nic_add(actor=alice, via="cli", vm=vm, network="lab")
    with pytest.raises(ValidationFailed, match="at most 1 NICs"):
        create(alice, name="web-2", networks=["lab", "lab"])


def test_a_host_that_refuses_the_network_leaves_it_on_no_host(test_host, admin_user):
    """Nothing half-created: the hosts that took the network lose it again when a later one fails."""
    from cluster.models import Host

    broken = Host.objects.create(name="gone", uri="qemu+unix:///system?socket=/nonexistent/sock", status="up")
    with pytest.raises(Conflict, match="could not be started on host gone, so it was not created"):
        net_services.network_create(actor=admin_user, via="cli", name="lab", cidr="10.120.0.0/24",
                                    hosts=[test_host, broken])
    assert not Network.objects.exists() and not NetworkHost.objects.exists()
    assert not [n for n in libvirt_networks() if n.startswith("vmp-net-")]


def test_a_failed_create_frees_its_nics_so_the_network_can_go(test_host, admin_user, alice):
    from storage.models import StoragePool

    net = make_network(admin_user, test_host)
    StoragePool.objects.filter(host=test_host).update(name="gone-pool")
    vm = create(alice, networks=["lab"]).vm
    assert VM.objects.get(pk=vm.pk).status == VMStatus.DELETED
    assert not VMNic.objects.exists()
    net_services.network_delete(actor=admin_user, via="cli", network=net)
    assert not Network.objects.exists()


def test_a_reshape_must_keep_the_reservations_inside_the_range(test_host, admin_user):
    net = make_network(admin_user, test_host)
    net_services.reservation_add(actor=admin_user, via="cli", network=net, mac="52:54:00:aa:bb:cc", ip="10.120.0.5")
    with pytest.raises(ValidationFailed, match=r"reservation of 10.120.0.5 .* does not fit 10.125.0.0/24"):
        net_services.network_update(actor=admin_user, via="cli", network=net, cidr="10.125.0.0/24",
                                    dhcp_start=None, dhcp_end=None)
    with pytest.raises(ValidationFailed, match="remove its reservations first"):
        net_services.network_update(actor=admin_user, via="cli", network=net, mode="bridge", bridge="br0", cidr="",
                                    dhcp_start=None, dhcp_end=None)
    net.refresh_from_db()
    assert net.cidr == "10.120.0.0/24" and net.mode == "isolated"
    net_services.network_update(actor=admin_user, via="cli", network=net, cidr="10.120.0.0/23")  # still fits
    net.refresh_from_db()
    assert net.cidr == "10.120.0.0/23"


def test_power_actions_and_delete_wait_for_a_nic_being_changed(test_host, admin_user, alice):
    make_network(admin_user, test_host)
    vm = create(alice, networks=["lab"]).vm
    VMNic.objects.filter(vm=vm).update(status=VMNic.Status.ATTACHING)
    with pytest.raises(InvalidState, match="is still attaching"):
        services.vm_stop(actor=alice, via="cli", vm=vm)
    with pytest.raises(InvalidState, match="is still attaching"):
        services.vm_delete(actor=alice, via="cli", vm=vm)
    services.vm_force_off(actor=alice, via="cli", vm=vm)  # the power cut never waits


def test_a_revert_keeps_the_nics_the_portal_has(test_host, admin_user, alice):
    """The snapshot's saved definition has the NICs of its time; the record's NICs win after a revert."""
    make_network(admin_user, test_host)
    vm = create(alice, networks=[], start=False).vm
    snap = services.snapshot_create(actor=alice, via="cli", vm=vm, name="bare").snapshot
    nic, job, _ = services.vm_nic_add(actor=alice, via="cli", vm=vm, network="lab")
    assert Job.objects.get(pk=job.pk).status == "succeeded"
    _, job, _ = services.snapshot_revert(actor=alice, via="cli", vm=vm, snapshot=snap.pk)
    assert Job.objects.get(pk=job.pk).status == "succeeded", Job.objects.get(pk=job.pk).error
    ifaces = domain_xml.parse_interfaces(get_driver(URI).domain_xml(str(vm.uuid), inactive=True))
    assert [i.mac for i in ifaces] == [nic.mac]
