"""`manage.py network`: administrators create, list, reserve and delete networks through the services (defined
on the hosts at once); refusals go to stderr with the exit status of their kind, as with `manage.py vm`."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command

from networks.management.commands.network import Command
from networks.models import Network, Reservation
from portal.choices import Via
from portal.models import AuditEvent
from vms.services import vm_create

pytestmark = pytest.mark.django_db


def net_cmd(*args: str) -> str:
    out = StringIO()
    call_command("network", *args, stdout=out)
    return out.getvalue()


def _code(*args: str) -> tuple[int, str]:
    with pytest.raises(CommandError) as exc:
        net_cmd(*args)
    return exc.value.returncode, str(exc.value)


def test_an_admin_creates_lists_and_shows_a_network(test_host, admin_user, libvirt_networks):
    Group.objects.create(name="qa")
    out = net_cmd("--user", "root-admin", "create", "lab", "--mode", "nat", "--cidr", "10.77.0.0/24",
                  "--dhcp-start", "10.77.0.100", "--dhcp-end", "10.77.0.199", "--host", "testhost", "--group", "qa",
                  "--default", "--title", "QA lab")
    assert out.strip() == "Created network lab (NAT, 10.77.0.0/24) on testhost."
    network = Network.objects.get(name="lab")
    assert network.libvirt_name in libvirt_networks()
    assert [g.name for g in network.groups.all()] == ["qa"] and network.is_default and not network.is_public
    event = AuditEvent.objects.get(action="network.create")
    assert (event.via, event.actor) == (Via.CLI, admin_user)

    listed = net_cmd("--user", "root-admin", "list")
    assert listed.split() == ["lab", "NAT", "10.77.0.0/24", "10.77.0.100-10.77.0.199", "testhost(active)",
                              "groups", "qa", "0", "NIC(s)", "default"]
    shown = net_cmd("--user", "root-admin", "show", "lab")
    assert "libvirt name   " + network.libvirt_name in shown and "host           testhost active" in shown


def test_a_bridged_network_and_its_refusals(test_host, admin_user, libvirt_networks):
    assert net_cmd("--user", "root-admin", "create", "office", "--mode", "bridge", "--bridge", "br0", "--host",
                   "testhost", "--public").strip() == "Created network office (bridged) on testhost."
    code, message = _code("--user", "root-admin", "create", "office2", "--mode", "bridge", "--bridge", "br0",
                          "--cidr", "192.168.1.0/24")
    assert code == 2 and "leave the address and DHCP ranges empty" in message
    assert _code("--user", "root-admin", "create", "lab3", "--mode", "mesh") == \
        (2, "Mode must be one of: isolated, nat, bridge.")
    assert _code("--user", "root-admin", "create", "lab", "--cidr", "10.0.0.0/24", "--host", "nohost") == \
        (2, "Unknown host 'nohost'.")
    assert set(Network.objects.values_list("name", flat=True)) == {"office"}


def test_overlaps_are_refused_and_only_administrators_change_networks(test_host, admin_user, alice):
    net_cmd("--user", "root-admin", "create", "lab", "--cidr", "10.77.0.0/24", "--host", "testhost")

    assert _code("--user", "root-admin", "create", "lab2", "--cidr", "10.77.0.0/16") == \
        (2, "10.77.0.0/16 overlaps the network lab (10.77.0.0/24).")
    assert _code("--user", "alice", "create", "mine", "--cidr", "10.90.0.0/24") == \
        (4, "Only administrators define networks.")
    assert _code("--user", "nobody", "list") == (3, "No user 'nobody'.")
    assert _code("--user", "root-admin", "delete", "nope") == (3, "No network named 'nope'.")
    assert _code("--user", "alice", "delete", "lab") == (3, "No network named 'lab'.")  # not hers to see
    assert net_cmd("--user", "alice", "list").strip() == "No networks."
    assert Network.objects.count() == 1


def test_reserve_and_unreserve_an_address(test_host, admin_user):
    net_cmd("--user", "root-admin", "create", "lab", "--cidr", "10.77.0.0/24", "--host", "testhost")

    out = net_cmd("--user", "root-admin", "reserve", "lab", "52:54:00:12:34:56", "10.77.0.5", "--hostname", "db")
    assert out.strip() == "Reserved 10.77.0.5 for 52:54:00:12:34:56 on lab."
    assert "reservation    52:54:00:12:34:56 10.77.0.5 db" in net_cmd("--user", "root-admin", "show", "lab")
    assert _code("--user", "root-admin", "reserve", "lab", "52:54:00:12:34:57", "10.77.0.5") == \
        (2, "10.77.0.5 is already reserved on lab.")
    assert _code("--user", "root-admin", "reserve", "lab", "52:54:00:12:34:57", "10.1.0.5") == \
        (2, "10.1.0.5 is not a usable address of 10.77.0.0/24.")
    assert _code("--user", "root-admin", "reserve", "lab", "not-a-mac", "10.77.0.6")[0] == 2
    assert _code("--user", "root-admin", "unreserve", "lab", "10.77.0.99") == \
        (3, "Network lab has no reservation for '10.77.0.99'.")

    assert net_cmd("--user", "root-admin", "unreserve", "lab", "10.77.0.5").strip() == \
        "Removed the reservation of 10.77.0.5 for 52:54:00:12:34:56 on lab."
    net_cmd("--user", "root-admin", "reserve", "lab", "52:54:00:12:34:56", "10.77.0.6")
    net_cmd("--user", "root-admin", "unreserve", "lab", "52-54-00-12-34-56")  # by MAC, as people type it
    assert not Reservation.objects.exists()
    assert AuditEvent.objects.filter(action="network.reservation.remove", via=Via.CLI).count() == 2


def test_delete_is_refused_while_a_nic_uses_the_network(test_host, admin_user, alice, libvirt_networks):
    net_cmd("--user", "root-admin", "create", "lab", "--cidr", "10.77.0.0/24", "--host", "testhost", "--public")
    network = Network.objects.get(name="lab")
    vm_create(actor=alice, via=Via.WEB, name="web-1", vcpus=1, memory_mib=128, disk_gib=1, networks=["lab"])

    code, message = _code("--user", "root-admin", "delete", "lab")
    assert code == 5 and message.startswith("Network lab is in use by 1 NIC(s) (web-1 (alice))")
    assert Network.objects.filter(name="lab").exists() and network.libvirt_name in libvirt_networks()
    assert "1 NIC(s)" in net_cmd("--user", "root-admin", "list")

    net_cmd("--user", "root-admin", "create", "spare", "--cidr", "10.78.0.0/24", "--host", "testhost")
    spare = Network.objects.get(name="spare")
    assert net_cmd("--user", "root-admin", "delete", "spare").strip() == "Deleted network spare."
    assert spare.libvirt_name not in libvirt_networks() and not Network.objects.filter(name="spare").exists()


def test_from_the_shell_errors_go_to_stderr_with_their_status(admin_user, capsys):
    with pytest.raises(SystemExit) as exc:
        Command().run_from_argv(["manage.py", "network", "--user", "root-admin", "delete", "nope"])
    captured = capsys.readouterr()
    assert exc.value.code == 3
    assert captured.err.strip() == "CommandError: No network named 'nope'." and captured.out == ""


# --- the README's block, as written ----------------------------------------------------------------

def readme_network_block() -> list[list[str]]:
    """The argv (from the command's name on) of each `manage.py …` line of the README's networks block."""
    import re
    import shlex

    from django.conf import settings

    readme = (settings.BASE_DIR / "README.md").read_text()
    section = readme.split("### Command line", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    block = next(b for b in re.findall(r"```sh\n(.*?)```", section, re.S) if "manage.py network" in b)
    lines = [shlex.split(line, comments=True) for line in block.splitlines()]
    return [argv[argv.index("manage.py") + 1:] for argv in lines if "manage.py" in argv]


@pytest.fixture
def local_host(db):
    """The README's host: `local` (here on libvirt's test driver), with an image to boot."""
    import tempfile

    from cluster.services import host_register
    from storage.services import image_register
    from tests.conftest import _cleanup_hypervisor

    host = host_register(actor=None, name="local", uri="test:///default", domain_type="qemu")
    with tempfile.NamedTemporaryFile(suffix=".img") as fh:
        fh.write(b"\0" * 510 + b"\x55\xaa" + b"\0" * 3584)  # a blank disk with an MBR
        fh.flush()
        image_register(actor=None, host=host, name="demo", title="Demo", source_path=fh.name, fmt="raw", is_default=True,
                       replace=True)
    yield host
    _cleanup_hypervisor("test:///default")


@pytest.mark.django_db(transaction=True)  # the VM jobs run on commit
def test_every_line_of_the_readme_networks_block_runs_as_written(local_host, make_user,
                                                                  libvirt_networks):
    from portal.hypervisor import domain_xml, get_driver
    from vms.models import VM, Flavor, VMNic

    make_user("admin", staff=True)
    make_user("demo", quota={"max_vms": 3, "max_vcpus": 4, "max_memory_mib": 2048, "max_disk_gib": 20})
    Flavor.objects.create(name="tiny", vcpus=1, memory_mib=128, disk_gib=1)
    # On libvirt's test driver a stopped VM's NIC changes rewrite its definition (no device calls there);
    # hot-plug on a running guest is proven on a real host inside a network namespace (test_qemu_networks).
    lines = readme_network_block()
    assert [argv[0] for argv in lines].count("network") >= 3 and len(lines) >= 10
    outputs = {}
    for argv in lines:
        out = StringIO()
        call_command(*argv, stdout=out)
        outputs[" ".join(argv)] = out.getvalue()
        if argv[-2:] == ["start", "db-1"]:
            vm = VM.objects.get(name="db-1")
            macs = [i.mac for i in domain_xml.parse_interfaces(get_driver(local_host.uri).domain_xml(str(vm.uuid)))]
            assert "52:54:00:00:00:50" in macs  # added to the stopped VM before it started
            assert VMNic.objects.get(vm__name="db-1", mac="52:54:00:00:00:50").network.name == "lan"

    lan = Network.objects.get(name="lan")
    assert lan.is_default and lan.libvirt_name in libvirt_networks()
    assert [n.network.name for n in VM.objects.get(name="web-2").nics.all()] == ["lan"]
    shown = next(text for cmd, text in outputs.items() if cmd.endswith("show db-1"))
    assert "lan" in shown and "52:54:00:00:00:50" in shown and "ssh " in shown
    assert VM.objects.get(name="db-1").status == "deleted" and not VMNic.objects.filter(vm__name="db-1").exists()
    assert not Reservation.objects.exists()
