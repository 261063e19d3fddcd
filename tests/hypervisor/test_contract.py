"""The gateway contract: the same cases against libvirt's test driver and the real qemu:///system.

Domains here are firmware-only (no OS): they start in well under a second under QEMU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import threading
import uuid

import pytest
from django.conf import settings

from portal.exceptions import (
    DomainNotFound,
    HypervisorError,
    HypervisorInvalidState,
    HypervisorUnavailable,
    NotFound,
)
from portal.hypervisor import DiskSpec, DomainSpec, PowerState, get_driver
from portal.hypervisor.driver import LibvirtDriver

URIS = [
    pytest.param("test:///default", id="test"),
    pytest.param("qemu:///system", id="qemu", marks=pytest.mark.qemu),
]


@pytest.fixture(params=URIS)
def driver(request):
    if request.param.startswith("qemu"):
        request.getfixturevalue("_qemu_session")
    d = get_driver(request.param)
    d.ensure_pool(settings.STORAGE_POOL, settings.STORAGE_DIR)
    return d


@pytest.fixture
def spec(driver):
    name = f"{settings.DOMAIN_PREFIX}-contract-{uuid.uuid4().hex[:8]}"
    s = DomainSpec(
        name=name, uuid=str(uuid.uuid4()), vcpus=1, memory_mib=64,
        domain_type=driver.resolve_domain_type("qemu"),
        title="web <1> & 'quoted'", description="a & b < c",
        metadata={"instance": settings.INSTANCE_ID, "vm-id": "0"},
    )
    yield s
    driver.undefine(s.uuid)


def test_host_info_reports_real_facts(driver):
    info = driver.host_info()
    assert info.cpus > 0 and info.memory_mib > 0
    assert info.libvirt_version.count(".") == 2
    if driver.is_test:
        assert info.domain_types == ("test",)
        assert info.uuid == ""  # the test driver's capabilities name no host UUID
    else:
        assert "qemu" in info.domain_types
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", info.uuid), info.uuid


def test_capabilities_are_declared(driver):
    caps = driver.capabilities()
    assert caps.acpi_shutdown and caps.events
    assert caps.real_guests is (not driver.is_test)
    assert caps.console is (not driver.is_test)


def test_define_start_stop_undefine_roundtrip(driver, spec):
    info = driver.define(spec)
    assert info.state == PowerState.SHUTOFF
    assert info.persistent
    assert info.title == "web <1> & 'quoted'"  # XML metacharacters survive, escaped by ElementTree
    assert info.metadata == {"instance": settings.INSTANCE_ID, "vm-id": "0"}

    assert driver.start(spec.uuid).state == PowerState.RUNNING
    assert driver.domain_info(spec.uuid).state == PowerState.RUNNING
    assert any(d.uuid == spec.uuid for d in driver.list_domains())

    driver.destroy(spec.uuid)
    assert driver.domain_info(spec.uuid).state == PowerState.SHUTOFF
    driver.undefine(spec.uuid)
    assert not driver.domain_exists(spec.uuid)


def test_verbs_are_idempotent(driver, spec):
    driver.define(spec)
    driver.start(spec.uuid)
    assert driver.start(spec.uuid).state == PowerState.RUNNING  # start a running domain: success
    driver.suspend(spec.uuid)
    driver.suspend(spec.uuid)
    assert driver.domain_info(spec.uuid).state == PowerState.PAUSED
    driver.resume(spec.uuid)
    driver.resume(spec.uuid)
    assert driver.domain_info(spec.uuid).state == PowerState.RUNNING
    driver.destroy(spec.uuid)
    driver.destroy(spec.uuid)  # force off a stopped domain: success
    driver.undefine(spec.uuid)
    driver.undefine(spec.uuid)  # delete a missing domain: success


def test_errors_are_classified(driver, spec):
    with pytest.raises(DomainNotFound):
        driver.domain_info(str(uuid.uuid4()))
    with pytest.raises(DomainNotFound):
        driver.start(str(uuid.uuid4()))
    driver.define(spec)
    with pytest.raises(HypervisorInvalidState, match="not running"):
        driver.reboot(spec.uuid)


def test_set_title_changes_title_and_description(driver, spec):
    driver.define(spec)
    driver.set_title(spec.uuid, title="renamed & <ok>", description="new")
    assert driver.domain_info(spec.uuid).title == "renamed & <ok>"


def test_lifecycle_events_arrive(driver, spec):
    seen = []
    got = threading.Event()

    def on_event(ev):
        if ev.uuid == spec.uuid and ev.event == "started":
            seen.append(ev)
            got.set()

    fresh = LibvirtDriver(driver.uri)  # own connection: callbacks stay with this test
    try:
        fresh.register_lifecycle(on_event)
        driver.define(spec)
        driver.start(spec.uuid)
        assert got.wait(10), "no STARTED event within 10 s"
        assert seen[0].name == spec.name
    finally:
        fresh.close()


def test_volumes_create_overlay_and_delete(driver):
    pool = settings.STORAGE_POOL
    base = f"{settings.DOMAIN_PREFIX}-base-{uuid.uuid4().hex[:6]}.qcow2"
    over = f"{settings.DOMAIN_PREFIX}-over-{uuid.uuid4().hex[:6]}.qcow2"
    b = driver.create_volume(pool=pool, name=base, capacity_bytes=64 * 1024 * 1024)
    try:
        o = driver.create_volume(pool=pool, name=over, capacity_bytes=1024**3, backing_path=b.path)
        assert o.capacity_bytes == 1024**3
        if not driver.is_test:
            assert o.format == "qcow2"
            assert o.backing_path == b.path  # a thin overlay, not a copy
            assert o.allocation_bytes < 10 * 1024 * 1024
        driver.delete_volume(pool=pool, name=over)
        driver.delete_volume(pool=pool, name=over)  # missing: success
        assert over not in {v.name for v in driver.list_volumes(pool=pool)}
    finally:
        driver.delete_volume(pool=pool, name=over)
        driver.delete_volume(pool=pool, name=base)


def test_clone_volume_flattens_the_backing_chain_and_grows(driver):
    """clone_volume makes a standalone copy of an overlay: no backing file, the base's data inside it
    (a raw copy has the same bytes as the base), grown to a larger capacity on request."""
    pool = settings.STORAGE_POOL
    tag = uuid.uuid4().hex[:6]
    base, over = f"{settings.DOMAIN_PREFIX}-cbase-{tag}.img", f"{settings.DOMAIN_PREFIX}-cover-{tag}.qcow2"
    flat, grown = f"{settings.DOMAIN_PREFIX}-cflat-{tag}.img", f"{settings.DOMAIN_PREFIX}-cgrow-{tag}.qcow2"
    mib = 1024 * 1024
    data = (b"portal template data " * 100_000)[: 2 * mib]
    try:
        b = driver.upload_bytes(pool=pool, name=base, data=data, fmt="raw")
        o = driver.create_volume(pool=pool, name=over, capacity_bytes=2 * mib, backing_path=b.path,
                                 backing_format="raw")
        c = driver.clone_volume(pool=pool, source=over, name=flat, fmt="raw")
        assert c.name == flat and c.capacity_bytes == 2 * mib and c.backing_path is None
        g = driver.clone_volume(pool=pool, source=over, name=grown, capacity_bytes=8 * mib)
        assert g.capacity_bytes == 8 * mib and g.backing_path is None
        assert driver.volume_info(pool=pool, name=grown).capacity_bytes == 8 * mib
        if driver.is_test:
            assert driver.volume_checksum(pool=pool, name=flat) is None  # the test driver cannot read volumes
        else:
            assert o.backing_path == b.path and g.format == "qcow2"
            assert driver.volume_checksum(pool=pool, name=flat) == hashlib.sha256(data).hexdigest()
        with pytest.raises(HypervisorError):  # the name is taken: refused, the existing volume kept
            driver.clone_volume(pool=pool, source=over, name=flat, fmt="raw")
        assert driver.volume_info(pool=pool, name=flat).capacity_bytes == 2 * mib
        with pytest.raises(NotFound):  # a missing source: not found
            driver.clone_volume(pool=pool, source=f"missing-{tag}", name=f"{settings.DOMAIN_PREFIX}-x-{tag}")
    finally:
        for name in (grown, flat, over, base):
            driver.delete_volume(pool=pool, name=name)


def test_snapshots_with_and_without_memory_revert_and_delete(driver, spec):
    """Internal snapshots on a qcow2 disk: RAM included while running; revert restores the power state."""
    volume = driver.create_volume(pool=settings.STORAGE_POOL, name=f"{spec.name}-snap.qcow2",
                                  capacity_bytes=16 * 1024 * 1024)
    s = dataclasses.replace(spec, disks=(DiskSpec(path=volume.path),))
    try:
        driver.define(s)
        driver.start(s.uuid)
        running = driver.snapshot_create(s.uuid, name="running-1", description="a & b <c>")
        assert running.has_memory and running.state == PowerState.RUNNING
        assert running.description == "a & b <c>"
        with pytest.raises(HypervisorInvalidState, match="exists on the host already"):
            driver.snapshot_create(s.uuid, name="running-1")
        again = driver.snapshot_create(s.uuid, name="running-1", adopt=True)  # a retry takes its own
        assert (again.name, again.created_at, again.has_memory) == ("running-1", running.created_at, True)
        driver.destroy(s.uuid)
        off = driver.snapshot_create(s.uuid, name="off-1")
        assert not off.has_memory and off.state == PowerState.SHUTOFF
        assert [x.name for x in driver.list_snapshots(s.uuid)] == ["running-1", "off-1"]

        assert driver.snapshot_revert(s.uuid, "running-1").state == PowerState.RUNNING
        assert driver.domain_info(s.uuid).state == PowerState.RUNNING
        assert driver.snapshot_revert(s.uuid, "off-1").state == PowerState.SHUTOFF

        driver.snapshot_delete(s.uuid, "off-1")
        driver.snapshot_delete(s.uuid, "off-1")  # idempotent
        assert [x.name for x in driver.list_snapshots(s.uuid)] == ["running-1"]
        with pytest.raises(DomainNotFound):
            driver.snapshot_revert(s.uuid, "off-1")
        driver.undefine(s.uuid)  # with a snapshot left: its metadata goes too
        assert not driver.domain_exists(s.uuid)
    finally:
        driver.undefine(s.uuid)
        driver.delete_volume(pool=settings.STORAGE_POOL, name=volume.name)


def test_disks_grow_live_and_offline_where_the_driver_can(driver, spec):
    mib = 1024 * 1024
    volume = driver.create_volume(pool=settings.STORAGE_POOL, name=f"{spec.name}-grow.qcow2", capacity_bytes=16 * mib)
    s = dataclasses.replace(spec, disks=(DiskSpec(path=volume.path),))
    try:
        driver.define(s)
        driver.start(s.uuid)
        grow = {"target": "vda", "pool": settings.STORAGE_POOL, "volume": volume.name}
        if not driver.capabilities().live_disk_resize:
            assert driver.is_test  # only the test driver says so; the services refuse before calling it
            return
        assert driver.grow_disk(s.uuid, capacity_bytes=32 * mib, **grow) == 32 * mib  # live
        assert driver.volume_info(pool=settings.STORAGE_POOL, name=volume.name).capacity_bytes == 32 * mib
        assert driver.grow_disk(s.uuid, capacity_bytes=24 * mib, **grow) == 32 * mib  # never shrinks
        driver.destroy(s.uuid)
        assert driver.grow_disk(s.uuid, capacity_bytes=48 * mib, **grow) == 48 * mib  # offline, by the volume
        assert driver.volume_info(pool=settings.STORAGE_POOL, name=volume.name).capacity_bytes == 48 * mib
    finally:
        driver.undefine(s.uuid)
        driver.delete_volume(pool=settings.STORAGE_POOL, name=volume.name)


def test_unreachable_hypervisor_is_reported_as_unavailable():
    bad = LibvirtDriver("qemu+unix:///system?socket=/nonexistent/libvirt-sock")
    with pytest.raises(HypervisorUnavailable, match="cannot be reached") as caught:
        bad.host_info()
    assert "/nonexistent/libvirt-sock" not in caught.value.message  # plain words for users,
    assert "cannot connect" in caught.value.detail  # the hypervisor's own words for administrators
    assert "/nonexistent/libvirt-sock" in caught.value.detail


def _iso_path(driver: LibvirtDriver) -> str:
    """Media QEMU can open: the guest ISO (scripts/build-guest-iso.sh); any path on the test driver."""
    from pathlib import Path

    iso = Path(settings.GUEST_DIR) / "guest.iso"
    if not driver.is_test and not iso.exists():
        pytest.fail(f"{iso} is missing: run scripts/build-guest-iso.sh (setup.sh --test does)")
    return str(iso)


def test_cdrom_drive_boots_first_and_media_changes_while_stopped(driver, spec):
    from portal.hypervisor import CdromSpec
    from portal.hypervisor.domain_xml import boot_order

    s = dataclasses.replace(spec, cdroms=(CdromSpec(),))  # an empty tray
    driver.define(s)
    assert boot_order(driver.domain_xml(s.uuid, inactive=True)) == ["cdrom", "hd"]
    assert driver.domain_cdroms(s.uuid, inactive=True) == [CdromSpec(target="hdc", bus="ide", path=None)]
    iso = _iso_path(driver)
    driver.change_media(s.uuid, target="hdc", path=iso)
    driver.change_media(s.uuid, target="hdc", path=iso)  # idempotent
    assert [c.path for c in driver.domain_cdroms(s.uuid, inactive=True)] == [iso]
    driver.change_media(s.uuid, target="hdc", path=None)
    assert [c.path for c in driver.domain_cdroms(s.uuid, inactive=True)] == [None]
    with pytest.raises(HypervisorInvalidState, match="no CD-ROM drive"):
        driver.change_media(s.uuid, target="hdd", path=iso)


def test_media_changes_in_a_running_domain_where_the_driver_can(driver, spec):
    from portal.exceptions import Unsupported
    from portal.hypervisor import CdromSpec

    s = dataclasses.replace(spec, cdroms=(CdromSpec(),))
    driver.define(s)
    driver.start(s.uuid)
    iso = _iso_path(driver)
    if not driver.capabilities().live_media_change:
        assert driver.is_test  # the services refuse before calling it
        with pytest.raises(Unsupported, match="stop it first"):
            driver.change_media(s.uuid, target="hdc", path=iso)
        return
    driver.change_media(s.uuid, target="hdc", path=iso)  # insert: live and in the definition
    assert [c.path for c in driver.domain_cdroms(s.uuid)] == [iso]
    assert [c.path for c in driver.domain_cdroms(s.uuid, inactive=True)] == [iso]
    driver.change_media(s.uuid, target="hdc", path=None)  # eject
    assert [c.path for c in driver.domain_cdroms(s.uuid)] == [None]
    assert [c.path for c in driver.domain_cdroms(s.uuid, inactive=True)] == [None]
    assert driver.domain_info(s.uuid).state == PowerState.RUNNING


def test_a_cdrom_drive_is_added_to_a_stopped_definition_and_nothing_else_changes(driver, spec):
    """attach_cdrom: how a CD goes into a domain the portal did not write (its kernel boot, reboot policy
    and boot order stay); idempotent; refused while the domain runs (IDE does not hot-plug)."""
    from portal.hypervisor import CdromSpec
    from portal.hypervisor.domain_xml import boot_order

    s = dataclasses.replace(spec, kernel="/srv/boot/vmlinuz-contract", cmdline="console=ttyS0 contract=1")
    driver.define(s)
    iso = _iso_path(driver)
    driver.attach_cdrom(s.uuid, CdromSpec(target="hdd", bus="ide", path=iso))
    driver.attach_cdrom(s.uuid, CdromSpec(target="hdd", bus="ide", path=None))  # there already: media only
    assert driver.domain_cdroms(s.uuid, inactive=True) == [CdromSpec(target="hdd", bus="ide", path=None)]
    xml = driver.domain_xml(s.uuid, inactive=True)
    assert "/srv/boot/vmlinuz-contract" in xml and "contract=1" in xml and boot_order(xml) != ["cdrom", "hd"]
    assert driver.domain_definition(s.uuid).machine or driver.is_test  # the machine type is read


def test_a_cdrom_drive_is_not_added_to_a_running_domain(driver, spec):
    from portal.hypervisor import CdromSpec

    driver.define(spec)
    driver.start(spec.uuid)
    with pytest.raises(HypervisorInvalidState, match="only while the VM is stopped"):
        driver.attach_cdrom(spec.uuid, CdromSpec(target="hdd", bus="ide", path=None))
    assert driver.domain_cdroms(spec.uuid, inactive=True) == []


def test_volumes_are_made_and_missing_ones_deleted_while_another_volume_of_the_pool_is_being_built(driver):
    """Concurrent creates on one host: while libvirt builds one volume (a full copy), it refuses to refresh
    the pool ("has asynchronous jobs running"). Deleting a missing volume (which refreshes the pool to look
    for a file that appeared behind libvirt's back) is still success then, and the portal's materialize
    path looks a volume up by name first, so a thin overlay is made meanwhile without a refresh."""
    pool = settings.STORAGE_POOL
    tag = uuid.uuid4().hex[:6]
    base = f"{settings.DOMAIN_PREFIX}-bbase-{tag}.img"
    copy, over = f"{settings.DOMAIN_PREFIX}-bcopy-{tag}.qcow2", f"{settings.DOMAIN_PREFIX}-bover-{tag}.qcow2"
    mib = 1024 * 1024
    errors: list[BaseException] = []
    try:
        b = driver.upload_bytes(pool=pool, name=base, data=os.urandom(64 * mib), fmt="raw")

        def build() -> None:
            try:
                get_driver(driver.uri).clone_volume(pool=pool, source=base, name=copy, capacity_bytes=512 * mib)
            except BaseException as exc:  # reported below
                errors.append(exc)

        builder = threading.Thread(target=build)
        builder.start()
        deletes = 0
        while builder.is_alive() or deletes == 0:
            driver.delete_volume(pool=pool, name=f"{settings.DOMAIN_PREFIX}-missing-{tag}")  # success, always
            deletes += 1
        builder.join()
        assert not errors, errors
        o = driver.create_volume(pool=pool, name=over, capacity_bytes=64 * mib, backing_path=b.path,
                                 backing_format="raw")
        assert o.name == over
    finally:
        for name in (over, copy, base):
            driver.delete_volume(pool=pool, name=name)
