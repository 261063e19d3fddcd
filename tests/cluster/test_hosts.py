"""Hosts: facts from libvirt, a host that goes down is marked and audited, reconcile on the test driver."""

import pytest

from cluster.models import Host
from cluster.services import host_refresh, host_sync
from portal.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_a_host_that_stops_answering_is_non_responsive_then_down_with_the_reason_and_audited(test_host, settings):
    assert test_host.status == "up" and test_host.cpus > 0 and test_host.failures == 0
    Host.objects.filter(pk=test_host.pk).update(uri="qemu+unix:///system?socket=/nonexistent/sock")
    test_host.refresh_from_db()
    host_refresh(host=test_host)  # one failed heartbeat: still up, with the reason
    test_host.refresh_from_db()
    assert (test_host.status, test_host.failures) == ("up", 1) and "cannot connect" in test_host.last_error
    assert host_sync(host=test_host)["status"] == "non_responsive"  # the second one
    test_host.refresh_from_db()
    assert test_host.failures == 2 and test_host.status_changed_at is not None
    event = AuditEvent.objects.get(action="host.non_responsive", target_id=str(test_host.pk))
    assert "cannot connect" in event.message
    settings.HOST_DOWN_AFTER_SECONDS = 0  # non-responsive long enough
    host_refresh(host=test_host)
    test_host.refresh_from_db()
    assert test_host.status == "down"
    assert AuditEvent.objects.filter(action="host.down", target_id=str(test_host.pk)).exists()


def test_a_host_that_never_answered_is_down_at_once(db):
    from cluster.services import host_register

    host = host_register(actor=None, name="nowhere", uri="qemu+unix:///system?socket=/nonexistent/sock")
    assert host.status == "down" and host.failures == 1 and "cannot connect" in host.last_error


def test_auto_domain_type_follows_the_probe_result(test_host):
    test_host.domain_type = "auto"
    test_host.kvm_boots_guests = False
    assert test_host.effective_domain_type == "qemu"
    test_host.kvm_boots_guests = True
    assert test_host.effective_domain_type == "kvm"
    test_host.domain_type = "qemu"
    assert test_host.effective_domain_type == "qemu"
