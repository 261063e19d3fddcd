"""Namespace hosts (scripts/nshost.sh): a second libvirtd in a network namespace of its own.

It registers as a portal Host distinct from the root one (hostname, host UUID, pool directory), a
real guest defined through the gateway boots on it and answers on its serial console, and stopping
it leaves no namespace, mount or process behind.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from portal.hypervisor import DiskSpec, DomainSpec, PowerState, get_driver
from storage.services import pool_for_host
from tests.conftest import QEMU_URI
from tests.guest_shell import GuestShell
from tests.nshost import NSHOST_DIR, ns_down, ns_up, nshost

pytestmark = pytest.mark.qemu


def _starttime(pid: int) -> str | None:
    """A live process's start time (field 22 of /proc/PID/stat), which tells it from a later process
    with the same PID; None once it is gone or a zombie (this machine's PID 1 reaps orphans slowly)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def test_the_namespace_host_is_a_host_of_its_own(ns_host, ns_hypervisor, qemu_host):
    assert ns_host.uri == ns_hypervisor.uri and ns_host.uri != qemu_host.uri
    assert ns_host.hostname == ns_hypervisor.name != qemu_host.hostname  # its own UTS namespace
    ns_info, root_info = get_driver(ns_host.uri).host_info(), get_driver(qemu_host.uri).host_info()
    assert ns_info.uuid and root_info.uuid and ns_info.uuid != root_info.uuid  # its own host_uuid
    # The UUID is derived from the name: the same after a restart (migration needs them distinct and stable).
    assert ns_info.uuid in nshost("status", ns_hypervisor.name).stdout

    # Its storage pool lives in its state dir, never in the root daemon's pool directory.
    assert pool_for_host(ns_host).path == str(ns_hypervisor.pool_dir) != pool_for_host(qemu_host).path

    # Its daemon runs in its network namespace, which has nothing but its own interfaces.
    links = ns_hypervisor.exec(["ip", "-o", "link", "show"]).stdout
    assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
    assert any(Path(f"/proc/{pid}/exe").resolve().name == "libvirtd" for pid in ns_hypervisor.pids())


def test_a_guest_defined_through_the_gateway_boots_and_answers_on_its_serial_console(
        ns_host, ns_hypervisor, ns_guest_image):
    driver = get_driver(ns_host.uri)
    pool = pool_for_host(ns_host)
    name = f"{settings.DOMAIN_PREFIX}-ns-{uuid.uuid4().hex[:6]}"
    disk = driver.create_volume(pool=pool.name, name=f"{name}.qcow2", capacity_bytes=ns_guest_image.size_bytes,
                                backing_path=ns_guest_image.path)
    assert disk.path.startswith(str(ns_hypervisor.pool_dir) + "/")
    spec = DomainSpec(
        name=name, uuid=str(uuid.uuid4()), vcpus=1, memory_mib=128, domain_type="qemu",
        disks=(DiskSpec(path=disk.path),), kernel=ns_guest_image.kernel_path, initrd=ns_guest_image.initrd_path,
        cmdline=ns_guest_image.cmdline.replace("{hostname}", "ns-guest"), graphics=False,
        metadata={"instance": settings.INSTANCE_ID},
    )
    driver.define(spec)
    try:
        assert driver.start(spec.uuid).state == PowerState.RUNNING
        with GuestShell(ns_host.uri, spec.uuid) as shell:
            shell.wait_ready(timeout=120)
            answer = shell.run("echo $((6*7)); hostname; cat /proc/cmdline")
            assert answer.status == 0, shell.tail()
            assert answer.output.splitlines()[:2] == ["42", "ns-guest"], answer
            assert "portalroot=/dev/vda" in answer.output  # booted our kernel line, root on the pool's disk
            assert shell.run("false").status == 1
        # The guest's QEMU runs inside the namespace host, not on the root daemon.
        assert not get_driver(QEMU_URI).domain_exists(spec.uuid)
        assert any(Path(f"/proc/{pid}/exe").resolve().name.startswith("qemu-system")
                   for pid in ns_hypervisor.pids())
    finally:
        driver.undefine(spec.uuid)
        driver.delete_volume(pool=pool.name, name=disk.name)


def test_up_is_idempotent_and_down_leaves_no_namespace_mount_or_process(_qemu_session):
    name = "vmp-test2"
    state_dir = NSHOST_DIR / name
    ns_down(name, purge=True)  # a fresh host: nothing left from an interrupted run
    hv = ns_up(name, addr="10.99.250.1/24")
    try:
        assert ns_up(name).uri == hv.uri  # up on a running host: the same URI, nothing restarted
        assert nshost("status", name).returncode == 0
        # --addr: a TCP listener on the namespace's own address, reachable inside the namespace only.
        over_tcp = hv.exec(["virsh", "-q", "-c", "qemu+tcp://10.99.250.1/system", "hostname"])
        assert over_tcp.stdout.strip() == name, over_tcp.stderr
        # A firmware-only domain (SeaBIOS, no disk): a QEMU process that must die with the host.
        spec = DomainSpec(name=f"{settings.DOMAIN_PREFIX}-nsdown", uuid=str(uuid.uuid4()), vcpus=1, memory_mib=64,
                          domain_type="qemu", graphics=False, metadata={"instance": settings.INSTANCE_ID})
        driver = get_driver(hv.uri)
        driver.define(spec)
        driver.start(spec.uuid)
        procs = {pid: _starttime(pid) for pid in hv.pids()}
        names = {Path(f"/proc/{pid}/exe").resolve().name for pid in procs}
        assert {"libvirtd", "virtlogd", "tini"} <= names and any(n.startswith("qemu-system") for n in names), names
    finally:
        get_driver(hv.uri).close()
        ns_down(name)

    assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    assert not Path(f"/run/netns/{name}").exists()
    mounts = Path("/proc/mounts").read_text()
    assert str(state_dir) not in mounts and f"/run/netns/{name} " not in mounts
    survivors = [pid for pid, started in procs.items() if started is not None and _starttime(pid) == started]
    assert survivors == []
    # Safe when already down; status says so.
    ns_down(name)
    assert nshost("status", name, check=False).returncode == 3
    ns_down(name, purge=True)
    assert not state_dir.exists()


def test_up_puts_a_running_host_back_on_a_fabric_that_went_away(_qemu_session, monkeypatch):
    # A fabric of its own, so that the shared one of other runs is never touched.
    fabric, name = "vmp-fabtry", "vmp-fabt1"
    monkeypatch.setenv("PORTAL_NSHOST_FABRIC", fabric)
    ns_down(name)
    hv = ns_up(name, addr="10.99.251.1/24")
    try:
        assert "10.99.251.1/24" in hv.exec(["ip", "-o", "addr", "show", "nsh0"]).stdout
        # The fabric is removed under the running host (its veth pair goes with it)...
        subprocess.run(["ip", "netns", "del", fabric], check=True)
        # ...`up --addr` on the running host attaches it again (it used to answer "up" and do nothing).
        assert ns_up(name, addr="10.99.251.1/24").uri == hv.uri
        assert "10.99.251.1/24" in hv.exec(["ip", "-o", "addr", "show", "nsh0"]).stdout
        ports = subprocess.run(["ip", "-n", fabric, "-o", "link", "show", "master", "br0"],
                               capture_output=True, text=True, check=True).stdout
        assert len(ports.splitlines()) == 1
    finally:
        ns_down(name, purge=True)
    assert not Path(f"/run/netns/{fabric}").exists()  # the fabric went with its last host
