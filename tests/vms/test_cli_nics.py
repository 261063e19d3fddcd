"""`manage.py vm` and networks: NICs at create (`--net`), `show` with NICs and the ssh line, nic-add and
nic-remove with their jobs, and the exit codes of each refusal (libvirt's test driver, jobs run at once)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from networks.services import network_create
from portal.choices import Via
from portal.hypervisor import domain_xml, get_driver
from storage.models import Image
from vms.models import VM, VMNic

pytestmark = pytest.mark.django_db(transaction=True)

SMALL = ["--vcpus", "1", "--memory-mib", "128", "--disk-gib", "1"]


def vm_cmd(*args: str) -> str:
    out = StringIO()
    call_command("vm", *args, stdout=out)
    return out.getvalue()


def _code(*args: str) -> tuple[int, str]:
    with pytest.raises(CommandError) as exc:
        vm_cmd(*args)
    return exc.value.returncode, str(exc.value)


@pytest.fixture
def lan(test_host, admin_user):
    """The default network, open to all, on the test host."""
    network = network_create(actor=admin_user, via=Via.CLI, name="lan", mode="nat", cidr="10.77.0.0/24",
                             hosts=[test_host], is_public=True, is_default=True)
    yield network
    get_driver("test:///default").remove_network(network.libvirt_name)


@pytest.fixture
def private(test_host, admin_user):
    """A network only administrators (and no group) may use."""
    network = network_create(actor=admin_user, via=Via.CLI, name="private", mode="isolated", cidr="10.78.0.0/24",
                             hosts=[test_host])
    yield network
    get_driver("test:///default").remove_network(network.libvirt_name)


def _login_user(user: str = "debian") -> None:
    """Images say which user logs in over SSH (Image.login_user)."""
    Image.objects.update(login_user=user)


def test_create_puts_a_nic_on_each_network_asked_for_and_show_prints_them(lan, private, alice, admin_user,
                                                                         monkeypatch):
    out = vm_cmd("--user", "root-admin", "create", "two-nets", *SMALL, "--net", "lan", "--net", "private", "--wait")
    assert "succeeded 100%" in out
    vm = VM.objects.get(name="two-nets")
    assert [n.network.name for n in vm.nics.order_by("id")] == ["lan", "private"]

    shown = vm_cmd("--user", "root-admin", "show", "two-nets")
    first, second = vm.nics.order_by("id")
    assert f"lan                  {first.mac}  virtio   attached   -" in shown
    assert f"private              {second.mac}" in shown
    assert "ssh          - (no address seen yet" in shown

    _login_user()
    VMNic.objects.filter(pk=first.pk).update(ip_address="10.77.0.23")
    info = vm_cmd("--user", "root-admin", "info", "two-nets")
    assert "10.77.0.23" in info and "ssh          ssh debian@10.77.0.23" in info


def test_without_net_a_vm_gets_the_default_network_and_with_net_none_no_nic(lan, alice):
    vm_cmd("--user", "alice", "create", "default-net", *SMALL)
    vm_cmd("--user", "alice", "create", "no-net", *SMALL, "--net", "none")

    assert [n.network.name for n in VM.objects.get(name="default-net").nics.all()] == ["lan"]
    assert not VM.objects.get(name="no-net").nics.exists()
    assert "nic          none" in vm_cmd("--user", "alice", "show", "no-net")


def test_unknown_or_forbidden_networks_are_refused_before_anything_is_made(lan, private, alice):
    assert _code("--user", "alice", "create", "web-1", *SMALL, "--net", "nope") == \
        (2, "Unknown network 'nope' (yours: lan).")
    assert _code("--user", "alice", "create", "web-1", *SMALL, "--net", "private") == \
        (2, "You may not use the network private.")
    assert _code("--user", "alice", "create", "web-1", *SMALL, "--net", "none,lan") == \
        (2, "--net none means no NIC at all: give it alone.")
    assert not VM.objects.exists() and not VMNic.objects.exists()


def test_nic_add_and_remove_run_jobs_and_hot_plug_is_refused_where_the_host_cannot(lan, private, alice, bob):
    vm_cmd("--user", "alice", "create", "web-1", *SMALL, "--net", "none", "--wait")

    # libvirt's test driver has no NIC hot-plug: the job fails and says what to do; nothing is left behind.
    code, message = _code("--user", "alice", "--wait", "nic-add", "web-1", "lan")
    assert (code, message) == (1, "The host of web-1 cannot hot-plug NICs; stop the VM and add it again.")
    assert not VMNic.objects.exists()

    # Stopped, the VM's definition changes (the test driver has no device calls: it is written again
    # from the portal's record); hot-plug into a running guest is proven in a namespace (test_qemu_networks).
    vm_cmd("--user", "alice", "--wait", "stop", "web-1")
    out = vm_cmd("--user", "alice", "nic-add", "web-1", "lan", "--model", "e1000", "--mac", "52:54:00:AB:CD:EF",
                 "--wait")
    assert "Adding a NIC on lan to web-1. MAC 52:54:00:ab:cd:ef." in out and "succeeded 100%" in out
    nic = VMNic.objects.get()
    assert (nic.model, nic.status, nic.network.name) == ("e1000", "attached", "lan")
    vm = VM.objects.get(name="web-1")
    ifaces = domain_xml.parse_interfaces(get_driver(vm.host.uri).domain_xml(str(vm.uuid), inactive=True))
    assert [(i.mac, i.network, i.model) for i in ifaces] == [("52:54:00:ab:cd:ef", lan.libvirt_name, "e1000")]

    assert _code("--user", "alice", "nic-add", "web-1", "private")[0] == 2  # not hers to use
    assert _code("--user", "alice", "nic-add", "web-1", "lan", "--model", "ne2k")[0] == 2
    assert _code("--user", "alice", "nic-add", "web-1", "lan", "--mac", "52:54:00:ab:cd:ef")[0] == 2  # taken
    assert _code("--user", "alice", "nic-remove", "web-1", "52:54:00:00:00:01")[0] == 3
    assert _code("--user", "bob", "nic-remove", "web-1", nic.mac)[0] == 3  # other users' VMs look missing

    out = vm_cmd("--user", "alice", "--wait", "nic-remove", "web-1", "52-54-00-AB-CD-EF")
    assert "Removing NIC 52:54:00:ab:cd:ef from web-1." in out and "succeeded 100%" in out
    assert not VMNic.objects.exists()
    assert domain_xml.parse_interfaces(get_driver(vm.host.uri).domain_xml(str(vm.uuid), inactive=True)) == []
