"""The networks back-office: the form is checked by the network services and defines the network on its hosts;
refusals come back on the form with nothing saved; a network in use is never deleted (libvirt's test driver)."""

from __future__ import annotations

import pytest
from django.contrib.messages import constants as levels
from django.urls import reverse

from networks.models import Network, Reservation
from portal.choices import Via
from portal.hypervisor import get_driver
from portal.models import AuditEvent
from vms.services import vm_create

from .conftest import TEST_URI

pytestmark = pytest.mark.django_db

ADD = "admin:networks_network_add"


@pytest.fixture
def staff_client(client, admin_user):
    client.force_login(admin_user)
    return client


def _form(**fields) -> dict:
    """What the add/change form posts (no inline rows unless given)."""
    data = {"name": "", "title": "", "description": "", "mode": "nat", "bridge": "", "cidr": "", "dhcp_start": "",
            "dhcp_end": "", "_save": "Save"}
    data.update({k: v for k, v in fields.items() if v is not None})
    return data


def _reservations(*rows: dict, initial: int = 0, existing: list | None = None) -> dict:
    """The reservations inline's management form and rows (existing rows: {"id": pk, "DELETE": "on"})."""
    rows = [*(existing or []), *rows]
    data = {"reservations-TOTAL_FORMS": str(len(rows)), "reservations-INITIAL_FORMS": str(initial),
            "reservations-MIN_NUM_FORMS": "0", "reservations-MAX_NUM_FORMS": "1000"}
    for i, row in enumerate(rows):
        for key, value in row.items():
            data[f"reservations-{i}-{key}"] = value
    return data


def _change_data(network: Network, **changes) -> dict:
    data = _form(title=network.title, description=network.description, mode=network.mode, bridge=network.bridge,
                 cidr=network.cidr, dhcp_start=network.dhcp_start or "", dhcp_end=network.dhcp_end or "",
                 on_hosts=[str(h.pk) for h in network.hosts.all()], groups=[str(g.pk) for g in network.groups.all()],
                 is_public="on" if network.is_public else None, is_default="on" if network.is_default else None)
    data.pop("name")
    existing = [{"id": str(r.pk), "network": str(network.pk)} for r in network.reservations.all()]
    data.update(_reservations(initial=len(existing), existing=existing))
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def _messages(response) -> list[tuple[int, str]]:
    return [(m.level, str(m.message)) for m in response.context["messages"]]


def _errors(response) -> dict:
    form = response.context["adminform"].form
    return {field: [str(e) for e in errs] for field, errs in form.errors.items()}


def test_an_admin_creates_a_network_with_the_form_and_it_is_defined_on_the_host(staff_client, test_host,
                                                                               admin_user, libvirt_networks):
    response = staff_client.post(reverse(ADD), _form(name="lan", title="Team LAN", cidr="10.77.0.0/24",
                                                     on_hosts=[str(test_host.pk)], is_public="on"), follow=True)

    assert response.status_code == 200
    network = Network.objects.get(name="lan")
    assert (network.mode, network.cidr, network.is_public) == ("nat", "10.77.0.0/24", True)
    assert (network.dhcp_start, network.dhcp_end) == ("10.77.0.10", "10.77.0.254")  # the default range
    assert network.libvirt_name in libvirt_networks()
    assert get_driver(TEST_URI).network_info(network.libvirt_name).active
    placement = network.placements.get()
    assert placement.host == test_host and placement.active and placement.last_error == ""
    event = AuditEvent.objects.get(action="network.create")
    assert event.via == Via.ADMIN and event.actor == admin_user and "on testhost" in event.message


def test_an_overlapping_range_is_a_form_error_and_nothing_is_saved(staff_client, test_host, make_network,
                                                                  libvirt_networks):
    make_network("lan", cidr="10.77.0.0/24")
    before = libvirt_networks()

    response = staff_client.post(reverse(ADD), _form(name="lab", cidr="10.77.0.128/25",
                                                     on_hosts=[str(test_host.pk)]))

    assert response.status_code == 200  # the form again, with the input kept
    assert _errors(response) == {"cidr": ["10.77.0.128/25 overlaps the network lan (10.77.0.0/24)."]}
    assert 'value="lab"' in response.content.decode()
    assert not Network.objects.filter(name="lab").exists()
    assert libvirt_networks() == before
    assert not AuditEvent.objects.filter(action="network.create", target_name="lab").exists()


def test_a_bridged_network_with_an_address_range_is_a_form_error(staff_client, test_host, libvirt_networks):
    before = libvirt_networks()
    response = staff_client.post(reverse(ADD), _form(name="office", mode="bridge", bridge="br0",
                                                     cidr="192.168.5.0/24", on_hosts=[str(test_host.pk)]))

    assert response.status_code == 200
    assert "leave the address and DHCP ranges empty" in " ".join(_errors(response)["cidr"])
    assert not Network.objects.exists() and libvirt_networks() == before


def test_a_bridged_network_names_the_hosts_bridge(staff_client, test_host, libvirt_networks):
    staff_client.post(reverse(ADD), _form(name="office", mode="bridge", bridge="br0", on_hosts=[str(test_host.pk)]))

    network = Network.objects.get(name="office")
    assert (network.bridge, network.cidr, network.manages_addresses) == ("br0", "", False)
    assert network.libvirt_name in libvirt_networks()
    page = staff_client.get(reverse("admin:networks_network_change", args=[network.pk])).content.decode()
    assert "DHCP reservations" not in page  # a bridged LAN's addresses are not the portal's


def test_a_network_in_use_is_not_deleted_and_says_why(staff_client, make_network, alice, libvirt_networks):
    network = make_network("lan", is_public=True)
    vm_create(actor=alice, via=Via.WEB, name="web-1", vcpus=1, memory_mib=128, disk_gib=1, networks=["lan"])
    url = reverse("admin:networks_network_delete", args=[network.pk])

    page = staff_client.get(url, follow=True)
    assert (levels.ERROR, "Cannot delete network lan: 1 NIC(s) use it (web-1 (alice)). Remove those NICs or "
                          "delete those VMs first.") in _messages(page)
    posted = staff_client.post(url, {"post": "yes"}, follow=True)
    assert posted.status_code == 200 and "Cannot delete network lan" in posted.content.decode()
    bulk = staff_client.post(reverse("admin:networks_network_changelist"),
                             {"action": "delete_selected", "_selected_action": [str(network.pk)]}, follow=True)
    assert any("Cannot delete network lan" in text for _, text in _messages(bulk))

    assert Network.objects.filter(pk=network.pk).exists() and network.libvirt_name in libvirt_networks()
    assert not AuditEvent.objects.filter(action="network.delete").exists()


def test_deleting_an_unused_network_removes_it_from_its_hosts(staff_client, make_network, libvirt_networks):
    network = make_network("lan")
    response = staff_client.post(reverse("admin:networks_network_delete", args=[network.pk]), {"post": "yes"},
                                 follow=True)

    assert (levels.SUCCESS, "Deleted network lan and removed it from testhost.") in _messages(response)
    assert not Network.objects.exists() and network.libvirt_name not in libvirt_networks()
    assert AuditEvent.objects.get(action="network.delete").via == Via.ADMIN


def test_the_list_shows_shape_hosts_access_and_use(staff_client, make_network, alice, make_user):
    from django.contrib.auth.models import Group

    team = Group.objects.create(name="qa-team")
    make_network("lan", is_public=True, is_default=True)
    make_network("lab", cidr="10.78.0.0/24", mode="isolated", groups=[team])
    vm_create(actor=alice, via=Via.WEB, name="web-1", vcpus=1, memory_mib=128, disk_gib=1)  # the default: lan

    add = staff_client.get(reverse(ADD)).content.decode()
    assert "address range" in add and "testhost" in add  # hosts to tick
    html = staff_client.get(reverse("admin:networks_network_changelist")).content.decode()
    assert "libvirt network of the same shape on each of its hosts" in html  # the note above the list
    assert "10.77.0.0/24" in html and "10.78.0.10 – 10.78.0.254" in html
    assert "NAT" in html and "isolated" in html and "qa-team" in html
    assert "testhost" in html and "active" in html
    assert "nics__network__id__exact" in html  # lan's NIC count links to its VMs
    vms = staff_client.get(reverse("admin:vms_vm_changelist"),
                           {"nics__network__id__exact": str(Network.objects.get(name="lan").pk)})
    assert vms.status_code == 200 and "web-1" in vms.content.decode()


def test_changes_go_through_the_service_and_a_reshape_in_use_is_refused_on_the_form(staff_client, make_network,
                                                                                     alice):
    network = make_network("lan", is_public=True)
    url = reverse("admin:networks_network_change", args=[network.pk])
    response = staff_client.post(url, _change_data(network, title="Team LAN"), follow=True)
    assert response.status_code == 200
    network.refresh_from_db()
    assert network.title == "Team LAN"
    assert AuditEvent.objects.get(action="network.update").message == "Changed network lan: title"

    vm_create(actor=alice, via=Via.WEB, name="web-1", vcpus=1, memory_mib=128, disk_gib=1, networks=["lan"])
    refused = staff_client.post(url, _change_data(network, cidr="10.99.0.0/24", dhcp_start="", dhcp_end="",
                                                  title="Renamed"))
    assert refused.status_code == 200
    assert _errors(refused) == {"__all__": ["Network lan is in use (web-1 (alice)): its addresses and mode cannot "
                                            "change until those NICs are removed."]}
    network.refresh_from_db()
    assert (network.cidr, network.title) == ("10.77.0.0/24", "Team LAN")  # nothing of that post was kept


def test_reservations_are_added_and_removed_through_their_services(staff_client, make_network):
    network = make_network("lan")
    url = reverse("admin:networks_network_change", args=[network.pk])
    row = {"mac": "52:54:00:AA:BB:01", "ip": "10.77.0.5", "hostname": "db"}
    data = _change_data(network)
    data.update(_reservations(row))
    response = staff_client.post(url, data, follow=True)

    assert response.status_code == 200
    reservation = Reservation.objects.get()
    assert (reservation.mac, reservation.ip, reservation.hostname) == ("52:54:00:aa:bb:01", "10.77.0.5", "db")
    assert AuditEvent.objects.filter(action="network.reservation.add", via=Via.ADMIN).exists()

    # Outside the range, or an address already reserved: next to the field, nothing saved.
    for bad, message in ((dict(row, mac="52:54:00:aa:bb:02", ip="10.1.2.3"), "is not a usable address of"),
                         (dict(row, mac="52:54:00:aa:bb:02"), "10.77.0.5 is already reserved on lan.")):
        data = _change_data(network)
        data.update(_reservations(bad, initial=1, existing=[{"id": str(reservation.pk), "network": str(network.pk)}]))
        refused = staff_client.post(url, data)
        assert refused.status_code == 200
        errors = [str(e) for form in refused.context["inline_admin_formsets"][0].formset.forms
                  for errs in form.errors.values() for e in errs]
        assert any(message in e for e in errors), errors
        assert Reservation.objects.count() == 1

    data = _change_data(network)
    data["reservations-0-DELETE"] = "on"
    staff_client.post(url, data, follow=True)
    assert not Reservation.objects.exists()
    assert AuditEvent.objects.filter(action="network.reservation.remove", via=Via.ADMIN).exists()


def test_a_refused_removal_is_said_on_top_of_the_form_and_the_reservation_stays(staff_client, make_network,
                                                                                monkeypatch):
    from networks import services
    from portal.exceptions import HypervisorUnavailable

    network = make_network("lan")
    services.reservation_add(actor=None, via=Via.CLI, network=network, mac="52:54:00:aa:bb:01", ip="10.77.0.5")

    def host_down(**kwargs):
        raise HypervisorUnavailable("The host cannot be reached right now.", detail="cannot connect to testhost")

    monkeypatch.setattr(services, "reservation_remove", host_down)
    data = _change_data(network, title="Changed too")
    data["reservations-0-DELETE"] = "on"
    response = staff_client.post(reverse("admin:networks_network_change", args=[network.pk]), data)

    assert response.status_code == 200
    [error] = _errors(response)["__all__"]
    assert error.startswith("Removing the reservation of 10.77.0.5 for 52:54:00:aa:bb:01: The host cannot be "
                            "reached right now.")
    assert "cannot connect to testhost" in error  # administrators read the hypervisor's words too
    network.refresh_from_db()
    assert Reservation.objects.count() == 1 and network.title == ""  # nothing of the post was kept


def test_reapply_reports_each_host(staff_client, make_network, libvirt_networks):
    network = make_network("lan")
    get_driver(TEST_URI).remove_network(network.libvirt_name)  # gone behind the portal's back
    assert network.libvirt_name not in libvirt_networks()

    response = staff_client.post(reverse("admin:networks_network_changelist"),
                                 {"action": "reapply", "_selected_action": [str(network.pk)]}, follow=True)

    assert any(level == levels.SUCCESS and text.startswith("lan on testhost: running")
               for level, text in _messages(response)), _messages(response)
    assert network.libvirt_name in libvirt_networks()


def test_a_vm_page_shows_its_nics(staff_client, make_network, alice):
    make_network("lan", is_public=True)
    result = vm_create(actor=alice, via=Via.WEB, name="web-1", vcpus=1, memory_mib=128, disk_gib=1)
    nic = result.vm.nics.get()

    html = staff_client.get(reverse("admin:vms_vm_change", args=[result.vm.pk])).content.decode()
    assert "NICs (networks)" in html and nic.mac in html and "lan" in html
