"""Review findings on the image library (issue #10), on libvirt's test driver: ids that only look like
digits, full copies cut short by a dying worker, image deletion racing VM creation, and what a user is
told about other users' VMs. The races themselves run on PostgreSQL (SQLite serialises all writes)."""

from __future__ import annotations

import logging
import tempfile
import threading
import time

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connection, connections, transaction

from portal.exceptions import Conflict, NotFound, ValidationFailed
from portal.hypervisor import get_driver
from storage.models import Image, StoragePool, Volume
from storage.services import image_delete, image_register, pool_for_host, volume_materialize, volume_plan
from vms import services
from vms.models import VM

pytestmark = pytest.mark.django_db(transaction=True)

GIB = 1024**3
SMALL = {"vcpus": 1, "memory_mib": 128, "disk_gib": 1}


def driver():
    return get_driver("test:///default")


def create(user, name: str, **kw) -> VM:
    return services.vm_create(actor=user, via="cli", name=name, **{**SMALL, "start": False, **kw}).vm


def register(host, name: str, **fields) -> Image:
    """A small raw image (an MBR) in the library, with `fields` set on its row."""
    with tempfile.NamedTemporaryFile(suffix=".img") as fh:
        fh.write(b"\0" * 510 + b"\x55\xaa" + b"\0" * 3584)
        fh.flush()
        image = image_register(actor=None, host=host, name=name, title=name, source_path=fh.name, fmt="raw")
    if fields:
        Image.objects.filter(pk=image.pk).update(**fields)
        image.refresh_from_db()
    return image


# --- ids: "²" is a digit to isdigit(), not to int() --------------------------------------------------

@pytest.mark.parametrize("key", ["²", "١٢", "³3"])
def test_ids_that_only_look_like_digits_are_names_not_500s(test_host, alice, client_for, key):
    response = client_for(alice).get(f"/api/images/{key}/")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    with pytest.raises(ValidationFailed, match="Unknown image"):
        create(alice, "web-1", image=key)
    vm = create(alice, "web-2")
    with pytest.raises(ValidationFailed, match="Unknown ISO image"):
        services.vm_cdrom_insert(actor=alice, via="cli", vm=vm, image=key)


# --- full copies and overlays: complete only once the row has its path ------------------------------

def test_a_full_copy_cut_short_is_made_again_not_used(test_host):
    image = Image.objects.get(name="test-blank")
    pool = pool_for_host(test_host)
    volume = volume_plan(pool=pool, name="copy-cut-short.qcow2", capacity_gib=2, backing_image=None, copy_of=image)
    # What a worker that died mid-copy leaves: libvirt lists the volume, the row has no path.
    driver().create_volume(pool=pool.name, name=volume.name, capacity_bytes=4096, fmt="qcow2")
    volume_materialize(volume=volume)
    info = driver().volume_info(pool=pool.name, name=volume.name)
    assert info.capacity_bytes == 2 * GIB  # the whole copy, grown to the disk's size
    assert Volume.objects.get(pk=volume.pk).path == info.path == volume.path


def test_a_thin_overlay_cut_short_is_made_again_on_its_image(test_host):
    image = Image.objects.get(name="test-blank")
    pool = pool_for_host(test_host)
    volume = volume_plan(pool=pool, name="overlay-cut-short.qcow2", capacity_gib=1, backing_image=image)
    driver().create_volume(pool=pool.name, name=volume.name, capacity_bytes=4096, fmt="qcow2")  # no backing
    volume_materialize(volume=volume)
    info = driver().volume_info(pool=pool.name, name=volume.name)
    assert info.backing_path == image.path and info.capacity_bytes == GIB
    assert Volume.objects.get(pk=volume.pk).path == info.path


@pytest.mark.parametrize("full", [False, True])
def test_a_finished_volume_is_kept_as_it_is(test_host, full):
    image = Image.objects.get(name="test-blank")
    pool = pool_for_host(test_host)
    volume = volume_plan(pool=pool, name="done.qcow2", capacity_gib=1, backing_image=None if full else image,
                         copy_of=image if full else None)
    volume_materialize(volume=volume)
    # Stands for what the guest made of it since (the test driver cannot resize): a volume told apart.
    driver().delete_volume(pool=pool.name, name=volume.name)
    driver().create_volume(pool=pool.name, name=volume.name, capacity_bytes=3 * GIB, fmt="qcow2")
    volume_materialize(volume=Volume.objects.get(pk=volume.pk))  # a retried job: nothing to do
    assert driver().volume_info(pool=pool.name, name=volume.name).capacity_bytes == 3 * GIB


# --- image_delete: one transaction, volume removed after commit -------------------------------------

def test_deleting_an_image_whose_volume_cannot_be_removed_logs_it_and_deletes_the_row(test_host, admin_user,
                                                                                     caplog):
    image = register(test_host, "lost-pool")
    gone = StoragePool.objects.create(host=test_host, name="no-such-pool", path="/nonexistent")
    Image.objects.filter(pk=image.pk).update(pool=gone)
    with caplog.at_level(logging.ERROR, logger="storage.services"):
        image_delete(actor=admin_user, via="cli", image=Image.objects.get(pk=image.pk))
    assert not Image.objects.filter(pk=image.pk).exists()
    assert any("could not be removed" in r.getMessage() for r in caplog.records)


def test_deleting_an_image_deleted_meanwhile_is_not_found(test_host, admin_user):
    image = register(test_host, "twice")
    stale = Image.objects.get(pk=image.pk)
    image_delete(actor=admin_user, via="cli", image=image)
    with pytest.raises(NotFound, match="no longer exists"):
        image_delete(actor=admin_user, via="cli", image=stale)


def test_a_refused_delete_keeps_the_base_volume(test_host, alice, admin_user):
    image = register(test_host, "kept", visibility=Image.Visibility.PUBLIC)
    create(alice, "thin-1", image=image)
    with pytest.raises(Conflict, match="thin clones: thin-1"):
        image_delete(actor=admin_user, via="cli", image=image)
    assert image.volume_name in {v.name for v in driver().list_volumes(pool=settings.STORAGE_POOL)}


# --- what a user is told about other users' VMs -----------------------------------------------------

def test_a_user_deleting_their_image_is_told_only_the_names_of_vms_they_may_see(test_host, alice, bob,
                                                                                admin_user, make_user):
    carol = make_user("carol", quota={"max_vms": 3, "max_vcpus": 4, "max_memory_mib": 2048, "max_disk_gib": 20})
    team = Group.objects.create(name="team")
    alice.groups.add(team)
    carol.groups.add(team)
    image = register(test_host, "alices", owner=alice, visibility=Image.Visibility.PUBLIC)
    create(alice, "mine-1", image=image)
    team_vm = create(carol, "team-1", image=image)
    VM.objects.filter(pk=team_vm.pk).update(group=team)
    create(bob, "bobs-secret-1", image=image)
    create(bob, "bobs-secret-2", image=image)
    with pytest.raises(Conflict) as exc:
        image_delete(actor=alice, via="cli", image=image)
    assert "thin clones: mine-1, team-1 and 2 VMs of other users" in exc.value.message
    assert "bobs" not in str(exc.value.message) + str(exc.value.fields)
    assert exc.value.fields["vms"] == ["mine-1", "team-1"]
    with pytest.raises(Conflict, match="bobs-secret-1, bobs-secret-2, mine-1, team-1"):
        image_delete(actor=admin_user, via="cli", image=image)  # administrators see every name

    iso = register(test_host, "alices-iso", owner=alice, visibility=Image.Visibility.PUBLIC, kind=Image.Kind.ISO)
    services.vm_cdrom_insert(actor=bob, via="cli", vm=VM.objects.get(name="bobs-secret-1"), image=iso)
    with pytest.raises(Conflict, match=r"CD-ROM drive of 1 VM\(s\): 1 VM of other users; eject") as exc:
        image_delete(actor=alice, via="cli", image=iso)
    assert exc.value.fields["vms"] == []


# --- races on PostgreSQL -----------------------------------------------------------------------------

needs_postgres = pytest.mark.skipif(connection.vendor != "postgresql", reason="row-lock races need PostgreSQL")


def _in_thread(fn):
    """Run `fn` in a thread with its own database connection; returns (thread, outcome dict)."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _wait_until_blocked(deadline: float = 60) -> None:
    """Until some session waits for a lock (pg_locks is read live, not from a snapshot)."""
    end = time.monotonic() + deadline
    with connection.cursor() as cursor:
        while time.monotonic() < end:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
            if cursor.fetchone()[0]:
                return
            time.sleep(0.05)
    raise AssertionError("the other session never waited for the lock")


@pytest.mark.postgres
@needs_postgres
def test_a_delete_waits_for_a_create_recording_a_clone_and_then_refuses(test_host, admin_user):
    image = register(test_host, "raced", visibility=Image.Visibility.PUBLIC)
    pool = pool_for_host(test_host)
    with transaction.atomic():
        # A VM create's record phase: the image row locked, a thin clone written, not yet committed.
        Image.objects.select_for_update().get(pk=image.pk)
        volume_plan(pool=pool, name="raced-disk0.qcow2", capacity_gib=1, backing_image=image)
        thread, outcome = _in_thread(lambda: image_delete(actor=admin_user, via="cli",
                                                          image=Image.objects.get(pk=image.pk)))
        _wait_until_blocked()
    thread.join(60)
    assert isinstance(outcome.get("error"), Conflict), outcome
    assert "thin clones: disk raced-disk0.qcow2" in outcome["error"].message
    assert Image.objects.filter(pk=image.pk).exists()
    assert image.volume_name in {v.name for v in driver().list_volumes(pool=settings.STORAGE_POOL)}


@pytest.mark.postgres
@needs_postgres
def test_a_create_waits_for_a_delete_under_way_and_says_the_image_is_gone(test_host, alice):
    image = register(test_host, "going", visibility=Image.Visibility.PUBLIC)
    with transaction.atomic():
        # image_delete's transaction: the row locked and deleted, not yet committed.
        Image.objects.select_for_update().get(pk=image.pk)
        Image.objects.filter(pk=image.pk).delete()
        thread, outcome = _in_thread(lambda: create(alice, "late-1", image="going"))
        _wait_until_blocked()
    thread.join(60)
    error = outcome.get("error")
    assert isinstance(error, ValidationFailed) and "Image going no longer exists" in error.message, outcome
    assert not VM.objects.filter(name="late-1").exists()
