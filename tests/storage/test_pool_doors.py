"""Shared storage has doors: pool_add / pool_configure (services), `manage.py pool`, `host add --storage-dir`
and the StoragePool admin (test driver hosts; the libvirt pool is checked in libvirt)."""

from __future__ import annotations

import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from cluster.models import Host
from portal.choices import Via
from portal.exceptions import PermissionDenied, ValidationFailed
from portal.hypervisor import get_driver
from portal.models import AuditEvent
from storage.models import StoragePool
from storage.services import pool_add, pool_configure


def _name(prefix: str = "nfs") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"  # the test driver keeps its pools for the whole process


def _run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_pool_add_makes_the_libvirt_pool_and_configure_marks_it_shared(test_host, admin_user, alice):
    name = _name()
    with pytest.raises(PermissionDenied):
        pool_add(actor=alice, via=Via.API, host=test_host, name=name, path="/srv/nfs/a")
    for path in ("srv/nfs", "/srv/../etc", "/", "/srv/a\nb", ""):
        with pytest.raises(ValidationFailed) as info:
            pool_add(actor=admin_user, via=Via.ADMIN, host=test_host, name=name, path=path)
        assert "path" in info.value.errors
    with pytest.raises(ValidationFailed, match="pool name"):
        pool_add(actor=admin_user, via=Via.ADMIN, host=test_host, name="../x", path="/srv/nfs/a")
    pool = pool_add(actor=admin_user, via=Via.ADMIN, host=test_host, name=name, path="/srv/nfs/a/", shared=True)
    assert (pool.path, pool.shared) == ("/srv/nfs/a", True)
    assert get_driver(test_host.uri).pool_info(name).path == "/srv/nfs/a"  # made in libvirt
    assert AuditEvent.objects.get(action="pool.add").via == Via.ADMIN
    with pytest.raises(ValidationFailed, match="already"):
        pool_add(actor=admin_user, via=Via.ADMIN, host=test_host, name=name, path="/srv/nfs/b")
    with pytest.raises(ValidationFailed, match="uses /srv/nfs/a already"):
        pool_add(actor=admin_user, via=Via.ADMIN, host=test_host, name=_name(), path="/srv/nfs/a")
    with pytest.raises(PermissionDenied):
        pool_configure(actor=alice, via=Via.API, pool=pool, shared=False)
    pool_configure(actor=admin_user, via=Via.CLI, pool=pool, shared=False)
    pool.refresh_from_db()
    assert pool.shared is False
    event = AuditEvent.objects.filter(action="pool.configure").latest("at")
    assert event.data == {"shared": {"from": True, "to": False}}


def test_a_shared_pool_has_one_path_on_every_host(test_host, admin_user):
    name = _name()
    other = Host.objects.create(name="other", uri="test:///nonexistent/other.xml", cluster=test_host.cluster)
    StoragePool.objects.create(host=other, name=name, path="/mnt/nfs", shared=True)
    with pytest.raises(ValidationFailed, match="same path on every host"):
        pool_add(actor=admin_user, via=Via.ADMIN, host=test_host, name=name, path="/srv/elsewhere", shared=True)
    pool = pool_add(actor=admin_user, via=Via.ADMIN, host=test_host, name=name, path="/srv/elsewhere")
    with pytest.raises(ValidationFailed, match="mount the storage at /mnt/nfs here too"):
        pool_configure(actor=admin_user, via=Via.ADMIN, pool=pool, shared=True)


def test_pool_cli_list_add_set(test_host, admin_user, alice):
    name = _name()
    text = _run("pool", "add", "testhost", name, "/srv/nfs/cli", "--shared")
    assert f"Added pool {name} on testhost at /srv/nfs/cli (shared)." in text
    listing = _run("pool", "list")
    assert name in listing and "/srv/nfs/cli" in listing and "yes" in listing
    assert "host-local" in _run("pool", "set", "testhost", name, "--no-shared")
    assert StoragePool.objects.get(name=name).shared is False
    with pytest.raises(CommandError, match="no pool 'nosuch'"):
        _run("pool", "set", "testhost", "nosuch", "--shared")
    with pytest.raises(CommandError, match="Only administrators"):
        _run("pool", "--user", alice.username, "set", "testhost", name, "--shared")
    with pytest.raises(CommandError, match="absolute path"):
        _run("pool", "add", "testhost", _name(), "relative/dir")


def test_host_add_storage_dir_makes_the_portal_pool_there(db, settings):
    uri = "test:///default"
    settings.STORAGE_POOL = name = _name("portal")  # a fresh portal pool name: the test driver keeps its pools
    driver = get_driver(uri)
    with pytest.raises(CommandError, match="absolute path"):
        _run("host", "add", "kvm2", uri, "--storage-dir", "nfs")
    assert not Host.objects.exists()
    text = _run("host", "add", "kvm2", uri, "--storage-dir", "/srv/nfs/portal/")
    assert f"Storage pools: {name} at /srv/nfs/portal." in text
    assert driver.pool_info(name).path == "/srv/nfs/portal"
    # a pool keeps its path: registering again elsewhere is refused, nothing changes
    with pytest.raises(CommandError, match="a pool keeps its path"):
        _run("host", "add", "kvm2", uri, "--storage-dir", "/srv/other")
    assert StoragePool.objects.get(host__name="kvm2", name=name).path == "/srv/nfs/portal"


def test_pool_admin_add_with_form_errors_and_change_shared(test_host, admin_client):
    url = reverse("admin:storage_storagepool_add")
    page = admin_client.get(url)
    assert page.status_code == 200 and "Add pool" in page.content.decode()
    name = _name()
    bad = admin_client.post(url, {"host": test_host.pk, "name": name, "path": "relative"})
    assert bad.status_code == 400 and "absolute path" in bad.content.decode()
    ok = admin_client.post(url, {"host": test_host.pk, "name": name, "path": "/srv/nfs/adm", "shared": "on"},
                           follow=True)
    assert f"Added pool {name} on testhost at /srv/nfs/adm (shared)." in ok.content.decode()
    pool = StoragePool.objects.get(name=name)
    assert pool.shared and AuditEvent.objects.get(action="pool.add").via == Via.ADMIN
    change = reverse("admin:storage_storagepool_change", args=[pool.pk])
    admin_client.post(change, {}, follow=True)  # unticked: host-local
    pool.refresh_from_db()
    assert pool.shared is False
    assert AuditEvent.objects.filter(action="pool.configure", via=Via.ADMIN).exists()
    # the service's refusal is shown, nothing saved
    other = Host.objects.create(name="other", uri="test:///nonexistent/other.xml", cluster=test_host.cluster)
    StoragePool.objects.create(host=other, name=name, path="/mnt/elsewhere", shared=True)
    page = admin_client.post(change, {"shared": "on"}, follow=True)
    assert "same path on every host" in page.content.decode()
    pool.refresh_from_db()
    assert pool.shared is False
