"""The monitor's reconcile reads a host in one bulk call (issue #13): the libvirt calls a steady host costs
per interval do not grow with its number of domains.

Counted with the gateway's own counter (`LibvirtDriver.counting_calls`) on libvirt's test driver, with
real domains defined there (cheap); `test_reconcile_calls_qemu.py` checks the same on qemu:///system
against libvirt's own RPC log.
"""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings

from cluster.models import ForeignDomain
from cluster.services import host_observe_event, host_sync
from portal.hypervisor import DomainSpec, get_driver
from vms import services
from vms.choices import VMStatus
from vms.models import VM

pytestmark = pytest.mark.django_db(transaction=True)  # jobs are enqueued on commit

# Calls a domain costs when it is read one by one (the old reconcile: info, XML, persistence).
PER_DOMAIN = {"info", "XMLDesc", "isPersistent", "lookupByUUIDString", "lookupByName"}


def _define(driver, count: int, **meta: str) -> list[str]:
    uuids = []
    for _ in range(count):
        uid = str(uuid.uuid4())
        driver.define(DomainSpec(name=f"{settings.DOMAIN_PREFIX}-bulk-{uid[:8]}", uuid=uid, vcpus=1, memory_mib=16,
                                 graphics=False, metadata=dict(meta)))
        uuids.append(uid)
    return uuids


def _steady_calls(host) -> tuple[int, dict[str, int], dict]:
    """The calls of one reconcile of `host` once it has been reconciled before (the monitor's steady state)."""
    driver = get_driver(host.uri)
    host_sync(host=host)
    with driver.counting_calls() as count:
        result = host_sync(host=host)
    return count.total, count.by_name, result


def test_a_steady_host_costs_the_same_calls_at_one_and_at_many_domains(test_host, alice, driver):
    vm = services.vm_create(actor=alice, via="cli", name="steady", vcpus=1, memory_mib=64, disk_gib=1).vm
    assert VM.objects.get(pk=vm.pk).status == VMStatus.RUNNING
    small_total, small_calls, small = _steady_calls(test_host)
    assert small["drifted"] == 0 and small["domains"] >= 2, small  # the VM's domain and the driver's own "test"

    many = 300
    _define(driver, many, instance="another-portal")
    with driver.counting_calls() as first:
        result = host_sync(host=test_host)
    assert result["domains"] == small["domains"] + many, result
    # New foreign domains have their metadata read once (lookup + XML each), never again.
    assert first.by_name.get("XMLDesc") == many, first.by_name

    big_total, big_calls, big = _steady_calls(test_host)
    print(f"libvirt calls per reconcile: {small_total} at {small['domains']} domains, "
          f"{big_total} at {big['domains']} domains ({sorted(big_calls.items())})")
    assert big_total == small_total, (small_calls, big_calls)
    assert big_calls.get("getAllDomainStats") == 1, big_calls
    assert not PER_DOMAIN & set(big_calls), big_calls
    assert ForeignDomain.objects.filter(host=test_host, owner_hint="portal instance another-portal").count() == many


def test_drift_is_seen_from_the_bulk_listing_without_a_call_per_domain(test_host, alice, driver):
    vm = services.vm_create(actor=alice, via="cli", name="drifts", vcpus=1, memory_mib=64, disk_gib=1).vm
    _define(driver, 50)
    steady, _calls, _ = _steady_calls(test_host)

    driver.destroy(str(vm.uuid))  # behind the portal's back
    with driver.counting_calls() as count:
        result = host_sync(host=test_host)
    assert result["drifted"] == 1, result
    assert VM.objects.get(pk=vm.pk).status == VMStatus.STOPPED
    assert count.total == steady, count.by_name

    driver.undefine(str(vm.uuid))
    with driver.counting_calls() as count:
        host_sync(host=test_host)
    vm.refresh_from_db()
    assert vm.status == VMStatus.ERROR and "missing" in vm.last_error, (vm.status, vm.last_error)
    assert not PER_DOMAIN & set(count.by_name), count.by_name


def test_foreign_metadata_is_read_again_after_an_event_and_an_orphan_is_named(test_host, driver):
    """A domain's metadata is read once and kept; a lifecycle event for it (defined anew) reads it again."""
    (orphan,) = _define(driver, 1, instance=settings.INSTANCE_ID, **{"vm-id": "999999"})
    host_sync(host=test_host)
    row = ForeignDomain.objects.get(host=test_host, uuid=orphan)
    assert row.owner_hint == "orphan of this portal (VM #999999 has no live record)"

    with driver.counting_calls() as count:
        host_sync(host=test_host)
    assert "XMLDesc" not in count.by_name, count.by_name

    name = row.name
    driver.define(DomainSpec(name=name, uuid=orphan, vcpus=1, memory_mib=16, graphics=False,
                             metadata={"instance": "someone-else"}))
    host_observe_event(host=test_host, uuid=orphan)  # what the monitor does with the "defined" event
    with driver.counting_calls() as count:
        host_sync(host=test_host)
    assert count.by_name.get("XMLDesc") == 1, count.by_name
    assert ForeignDomain.objects.get(host=test_host, uuid=orphan).owner_hint == "portal instance someone-else"


def test_the_counter_counts_only_inside_its_block(driver):
    driver.list_domain_states()
    with driver.counting_calls() as count:
        driver.list_domain_states()
        driver.list_domain_states()
    driver.list_domain_states()
    assert count.total == 2 and count.by_name == {"getAllDomainStats": 2}, count
