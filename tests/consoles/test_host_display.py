"""The console route is per host: the relay dials the host's display address, never a loopback address
for a host that is not this machine (issue #12: a remote VM's screen console dialled 127.0.0.1 on the
portal machine and answered another display's VNC challenge with the remote VM's password).
"""

from __future__ import annotations

import socket
import threading

import pytest
from django.test import override_settings

from cluster.hostconfig import host_configure, host_display_address, host_graphics_listen, host_is_local
from cluster.models import Host
from consoles.exceptions import ConsoleUnavailable
from consoles.services import (
    _dial_address,
    console_screen_target,
    console_ticket_issue,
    console_ticket_redeem,
)
from portal.exceptions import ValidationFailed
from portal.hypervisor import get_driver
from portal.models import AuditEvent
from vms.models import VM
from vms.specs import build_spec

from .conftest import ORIGIN

REFUSAL = "The screen console is not available for VMs on host {}: an administrator must set its display address."


@pytest.mark.parametrize(("uri", "local"), [
    ("qemu:///system", True), ("qemu:///session", True), ("qemu+unix:///system", True), ("test:///default", True),
    ("qemu+unix:///system?socket=/var/lib/vmportal/nshosts/h/sock/libvirt-sock", False),  # another namespace
    ("qemu+ssh://root@kvm2/system", False), ("qemu+tcp://10.0.0.2/system", False), ("qemu+tls://kvm2/system", False),
    ("qemu://kvm2/system", False),
])
def test_a_host_is_local_only_without_a_host_part_and_without_another_daemons_socket(uri, local):
    assert host_is_local(Host(name="h", uri=uri)) is local


@override_settings(GRAPHICS_LISTEN="127.0.0.1")
def test_display_address_per_host():
    assert host_display_address(Host(name="l", uri="qemu:///system")) == "127.0.0.1"
    remote = Host(name="r", uri="qemu+tcp://10.0.0.2/system")
    assert host_display_address(remote) is None
    assert host_graphics_listen(remote) == "127.0.0.1"  # its own loopback: reachable by nobody else
    remote.display_address = "10.0.0.2"
    assert host_display_address(remote) == host_graphics_listen(remote) == "10.0.0.2"


def test_the_relay_dials_a_remote_hosts_display_address_and_never_a_loopback_one():
    remote = Host(name="kvm2", uri="qemu+tcp://10.0.0.2/system")
    assert _dial_address(host=remote, address="10.0.0.2") == "10.0.0.2"
    for bad in ("localhost", "127.0.0.1", "127.0.0.2", "::1", "0.0.0.0"):
        with pytest.raises(ConsoleUnavailable, match="kvm2"):
            _dial_address(host=remote, address=bad)
    local = Host(name="local", uri="qemu:///system")
    assert _dial_address(host=local, address="0.0.0.0") == "127.0.0.1"  # a local wildcard: its loopback
    assert _dial_address(host=local, address="127.0.0.1") == "127.0.0.1"


def test_a_loopback_or_wildcard_display_address_is_refused_for_a_remote_host(db, admin_user, test_host):
    remote = Host.objects.create(name="kvm2", uri="qemu+tcp://10.0.0.2/system")
    for bad in ("127.0.0.1", "localhost", "0.0.0.0"):
        with pytest.raises(ValidationFailed) as caught:
            host_configure(actor=admin_user, via="cli", host=remote, display_address=bad)
        assert "display_address" in caught.value.errors
    host_configure(actor=admin_user, via="cli", host=remote, display_address="10.0.0.2")
    remote.refresh_from_db()
    assert remote.display_address == "10.0.0.2"
    assert AuditEvent.objects.get(action="host.configure", target_id=str(remote.pk)).message == (
        "kvm2: display address 10.0.0.2")
    host_configure(actor=admin_user, via="cli", host=test_host, display_address="127.0.0.2")  # local: fine


# --- real VMs ---------------------------------------------------------------------------------------------

class _Listener:
    """A TCP listener on 127.0.0.1:`port` that counts the connections it gets."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(5)
        self.sock.settimeout(0.2)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.sendall(b"RFB 003.008\n")
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.mark.qemu
@pytest.mark.django_db(transaction=True)
def test_a_vm_on_a_namespace_host_has_no_screen_console_and_nothing_dials_127_0_0_1(
        ns_host, ns_guest_image, alice, session_for, make_ticket):
    from vms.services import vm_create

    assert not host_is_local(ns_host) and host_display_address(ns_host) is None
    vm = VM.objects.select_related("host").get(pk=vm_create(
        actor=alice, via="web", name="far-screen", image=ns_guest_image, vcpus=1, memory_mib=128, disk_gib=1,
        networks=[]).vm.pk)
    assert vm.host == ns_host and vm.status == "running", vm.last_error
    # Its display listens on the namespace's own loopback, at a port that 127.0.0.1 here may also have.
    listen, port, _ = get_driver(ns_host.uri).graphics_endpoint(str(vm.uuid))
    assert listen == "127.0.0.1" and port > 0
    key = session_for(alice)
    message = REFUSAL.format(ns_host.name)
    with pytest.raises(ConsoleUnavailable) as caught:
        console_ticket_issue(actor=alice, via="web", vm=vm, kind="screen", session_key=key)
    assert caught.value.message == message
    listener = _Listener(port)  # what the old relay would have reached (another local display, say)
    try:
        token = make_ticket(alice, vm, key)
        with pytest.raises(ConsoleUnavailable) as caught:
            console_ticket_redeem(token=token, vm_id=vm.pk, kind="screen", session_key=key, origin=ORIGIN,
                                  host="testserver", scheme="http", tier="channels")
        assert caught.value.message == message
    finally:
        listener.close()
    assert listener.connections == 0
    denied = AuditEvent.objects.filter(action="console.open", outcome="denied", target_id=str(vm.pk)).last()
    assert denied is not None and denied.message == message
    # The serial console goes through libvirt's stream, not the display: it still works.
    serial = console_ticket_issue(actor=alice, via="web", vm=vm, kind="serial", session_key=key)
    grant = console_ticket_redeem(token=serial.token, vm_id=vm.pk, kind="serial", session_key=key, origin=ORIGIN,
                                  host="testserver", scheme="http", tier="channels")
    assert grant.target_host is None
    from consoles.services import console_serial_open

    stream = console_serial_open(session_id=grant.session_id)
    stream.close()


@pytest.mark.qemu
@pytest.mark.django_db(transaction=True)
def test_a_display_address_is_dialled_and_a_domain_listening_elsewhere_is_refused(
        qemu_host, guest_image, admin_user, alice):
    from vms.services import vm_create

    host_configure(actor=admin_user, via="cli", host=qemu_host, display_address="127.0.0.2")
    vm = VM.objects.select_related("host").get(pk=vm_create(
        actor=alice, via="web", name="near-screen", image=guest_image, vcpus=1, memory_mib=128, disk_gib=1).vm.pk)
    assert vm.status == "running", vm.last_error
    assert build_spec(vm, domain_type="qemu").graphics_listen == "127.0.0.2"
    address, port, password = console_screen_target(vm)
    assert address == "127.0.0.2" and port > 0 and password
    with socket.create_connection((address, port), timeout=5) as sock:  # QEMU really listens there
        assert sock.recv(12) == b"RFB 003.008\n"
    # The host's display address changes: the running domain still listens on the old one.
    host_configure(actor=admin_user, via="cli", host=qemu_host, display_address="127.0.0.3")
    vm.host.refresh_from_db()
    with pytest.raises(ConsoleUnavailable, match="does not listen on its host's display address"):
        console_screen_target(vm)


# --- security review (issue #12) -------------------------------------------------------------------------

def test_ipv4_mapped_loopback_and_wildcards_are_refused_for_a_remote_host(db, admin_user):
    """::ffff:127.0.0.1 reaches this machine's loopback on a dual-stack socket: refused like 127.0.0.1,
    when an administrator sets it and when the relay dials (it is what getaddrinfo returns for it)."""
    remote = Host.objects.create(name="kvm3", uri="qemu+tcp://10.0.0.3/system")
    for bad in ("::ffff:127.0.0.1", "::ffff:7f00:1", "[::ffff:127.0.0.1]", "::ffff:0.0.0.0", "0:0::0"):
        with pytest.raises(ValidationFailed):
            host_configure(actor=admin_user, via="cli", host=remote, display_address=bad)
        with pytest.raises(ConsoleUnavailable, match="kvm3"):
            _dial_address(host=remote, address=bad)


def test_an_unresolvable_display_address_is_not_shown_to_the_user():
    remote = Host(name="kvm4", uri="qemu+tcp://10.0.0.4/system")
    with pytest.raises(ConsoleUnavailable) as caught:
        _dial_address(host=remote, address="no-such-name.invalid")
    assert "kvm4" in caught.value.message and "no-such-name" not in caught.value.message
