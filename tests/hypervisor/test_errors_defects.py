"""The gateway's error classification: plain words in `message`, libvirt's text in `detail`, and a
domain busy in libvirt (its state change lock) as the transient HypervisorBusy."""

from __future__ import annotations

import uuid

import libvirt
import pytest

from portal.exceptions import (
    DomainNotFound,
    HypervisorBusy,
    HypervisorInvalidState,
    HypervisorUnavailable,
    OperationFailed,
)
from portal.hypervisor import get_driver
from portal.hypervisor.driver import LibvirtDriver
from portal.hypervisor.errors import classify, is_busy_error

LOCK = "Timed out during operation: cannot acquire state change lock (held by monitor=remoteDispatchDomainGetInfo)"


def libvirt_error(code: int, message: str) -> libvirt.libvirtError:
    """A libvirtError as libvirt raises it: code, domain, message, level, extra strings and ints."""
    exc = libvirt.libvirtError(message)
    exc.err = (code, libvirt.VIR_FROM_QEMU, message, libvirt.VIR_ERR_ERROR, None, None, None, -1, -1)
    return exc


@pytest.mark.parametrize(("code", "message"), [
    (libvirt.VIR_ERR_OPERATION_TIMEOUT, LOCK),
    (libvirt.VIR_ERR_OPERATION_INVALID, "Requested operation is not valid: cannot acquire state change lock"),
    (libvirt.VIR_ERR_OPERATION_FAILED,
     "operation failed: cannot acquire state change lock (held by monitor=x) due to max_queued limit"),
])
def test_a_domain_busy_in_libvirt_is_classified_as_transient_busy(code, message):
    err = classify(libvirt_error(code, message), what="reboot 1234")
    assert type(err) is HypervisorBusy and err.transient
    assert err.code == "hypervisor_busy" and err.http_status == 503
    assert err.message == "The host was busy with this VM; try again in a minute."
    assert err.detail == f"reboot 1234: {message}"
    assert err.fields == {"libvirt_code": code}


def test_other_invalid_states_are_not_busy():
    exc = libvirt_error(libvirt.VIR_ERR_OPERATION_INVALID, "Requested operation is not valid: domain is not running")
    assert not is_busy_error(exc)
    err = classify(exc, what="pause 1234")
    assert type(err) is HypervisorInvalidState and not err.transient
    assert err.message == HypervisorInvalidState.plain
    assert err.detail == "pause 1234: Requested operation is not valid: domain is not running"


def test_a_lost_socket_is_unavailable_with_the_path_for_admins_only():
    exc = libvirt_error(libvirt.VIR_ERR_SYSTEM_ERROR,
                        "Failed to connect socket to '/var/run/libvirt/libvirt-sock': Connection refused")
    err = classify(exc, what="domain 1234")
    assert type(err) is HypervisorUnavailable
    assert "libvirt-sock" not in err.message and "libvirt-sock" in err.detail


def test_anything_else_keeps_libvirts_text_in_the_detail():
    err = classify(libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR, "internal error: qemu unexpectedly closed the monitor"))
    assert type(err) is OperationFailed and err.message == OperationFailed.plain
    assert err.detail == "internal error: qemu unexpectedly closed the monitor"


def test_the_gateway_raises_busy_for_a_state_change_lock():
    driver = LibvirtDriver("test:///default")

    def locked(_conn):
        raise libvirt_error(libvirt.VIR_ERR_OPERATION_TIMEOUT, LOCK)

    with pytest.raises(HypervisorBusy) as caught:
        driver._call("start 1234", locked)
    assert caught.value.detail == f"start 1234: {LOCK}"
    driver.close()


def test_a_real_test_driver_error_reads_plainly_with_libvirts_words_in_the_detail():
    missing = str(uuid.uuid4())
    with pytest.raises(DomainNotFound) as caught:
        get_driver("test:///default").domain_info(missing)
    assert caught.value.message == DomainNotFound.plain
    assert caught.value.detail.startswith(f"domain {missing}: Domain not found")


def test_an_unreachable_uri_is_not_in_the_message_but_in_the_detail():
    uri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
    with pytest.raises(HypervisorUnavailable) as caught:
        LibvirtDriver(uri).list_domains()
    assert caught.value.message == HypervisorUnavailable.plain
    assert uri in caught.value.detail and "/nonexistent/libvirt-sock" in caught.value.detail


def test_a_broken_pipe_to_a_dead_daemon_is_a_lost_connection_not_a_failed_operation():
    """A host whose libvirtd was killed answers the next call with "Cannot write data: Broken pipe": the
    gateway reconnects (and then finds the host unreachable) instead of reporting an operation failure
    (a flaky HA test: the host's heartbeat failed with OperationFailed instead of going non-responsive)."""
    import libvirt

    from portal.hypervisor.errors import is_connection_error

    exc = libvirt.libvirtError("Cannot write data: Broken pipe")
    exc.err = (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, "Cannot write data: Broken pipe", 2,
               None, None, None, -1, 0)
    assert is_connection_error(exc)
    exc.err = (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, "Cannot write data: No space left", 2,
               None, None, None, -1, 0)
    assert not is_connection_error(exc)
