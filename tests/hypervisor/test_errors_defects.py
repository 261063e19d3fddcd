"""The gateway's error classification: plain words in `message`, libvirt's text in `detail`."""

from __future__ import annotations

import uuid

import libvirt
import pytest

from portal.exceptions import (
    DomainNotFound,
    HypervisorInvalidState,
    HypervisorUnavailable,
    OperationFailed,
)
from portal.hypervisor import get_driver
from portal.hypervisor.driver import LibvirtDriver
from portal.hypervisor.errors import classify


def libvirt_error(code: int, message: str) -> libvirt.libvirtError:
    """A libvirtError as libvirt raises it: code, domain, message, level, extra strings and ints."""
    exc = libvirt.libvirtError(message)
    exc.err = (code, libvirt.VIR_FROM_QEMU, message, libvirt.VIR_ERR_ERROR, None, None, None, -1, -1)
    return exc


def test_an_invalid_state_reads_plainly():
    exc = libvirt_error(libvirt.VIR_ERR_OPERATION_INVALID, "Requested operation is not valid: domain is not running")
    err = classify(exc, what="pause 1234")
    assert type(err) is HypervisorInvalidState
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
