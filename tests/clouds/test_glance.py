"""Glance import through the services, the REST API and the CLI against a real Glance (the `glance_server`
harness: glance-api on 127.0.0.1, PostgreSQL, file store, no Keystone), storing on libvirt's test driver:
properties listed, re-imports idempotent, bytes that do not match Glance's os_hash_value refused with
nothing left behind, formats the portal refuses named in a clear 4xx."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from clouds.glance import glance_images, glance_import
from clouds.models import Cloud, GlanceImport
from portal.models import Job
from storage.models import Image
from tests.storage.test_imports import pool_volumes, staging_files


@pytest.fixture
def cloud(db, glance_server):
    return Cloud.objects.create(name="local", auth_type=Cloud.Auth.NONE, image_endpoint=glance_server.url)


@pytest.fixture
def staging(settings, tmp_path):
    settings.IMAGE_STAGING_DIR = str(tmp_path / "staging")
    return settings.IMAGE_STAGING_DIR


@pytest.fixture
def glance(glance_server):
    """The harness's openstacksdk connection; every image a test uploads is deleted afterwards."""
    conn = glance_server.connection()
    made: list[str] = []

    def upload(name: str, data: bytes, disk_format: str = "qcow2", container_format: str = "bare", **props):
        image = conn.image.create_image(name=name, data=data, disk_format=disk_format,
                                        container_format=container_format, allow_duplicates=True, **props)
        made.append(image.id)
        return conn.image.wait_for_status(conn.image.get_image(image.id), status="active", wait=60)

    upload.conn = conn  # type: ignore[attr-defined]
    yield upload
    for image_id in made:
        conn.image.delete_image(image_id, ignore_missing=True)


def qcow2_bytes(tmp_path: Path, size: str = "16M", fill: bool = True) -> bytes:
    """A small qcow2 with some written data (so its bytes are not just a header)."""
    raw = tmp_path / "src.raw"
    with open(raw, "wb") as fh:
        fh.truncate(int(size[:-1]) * 1024 * 1024)
        if fill:
            fh.seek(1024 * 1024)
            fh.write(os.urandom(256 * 1024))
    out = tmp_path / "src.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(out)], check=True)
    return out.read_bytes()


def test_the_list_shows_formats_sizes_checksums_visibility_and_what_was_imported(
        transactional_db, cloud, glance, admin_user, client_for, test_host, staging, tmp_path):
    data = qcow2_bytes(tmp_path)
    image = glance("Listed Image", data, visibility="public", min_disk=2, min_ram=256, os_distro="debian",
                   os_type="linux")
    rows = {r["id"]: r for r in glance_images(actor=admin_user, cloud=cloud)}
    row = rows[image.id]
    assert (row["name"], row["status"], row["disk_format"], row["container_format"]) == \
        ("Listed Image", "active", "qcow2", "bare")
    assert row["size"] == len(data) and row["virtual_size"] == 16 * 1024 * 1024
    assert row["checksum"] == hashlib.md5(data).hexdigest()
    assert (row["os_hash_algo"], row["os_hash_value"]) == ("sha512", hashlib.sha512(data).hexdigest())
    assert (row["visibility"], row["min_disk"], row["min_ram"]) == ("public", 2, 256)
    assert (row["os_distro"], row["os_type"], row["importable"], row["imported_as"]) == ("debian", "linux", True, None)

    response = client_for(admin_user).post(f"/api/clouds/{cloud.name}/glance/images/{image.id}/import/", {},
                                           format="json")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["job"]["id"])
    assert job.status == "succeeded", job.error
    portal = Image.objects.get(name="listed-image")
    assert (portal.source, portal.source_format, portal.format) == (f"glance:local/{image.id}", "qcow2", "qcow2")
    assert (portal.min_disk_gib, portal.default_memory_mib, portal.os_name) == (16 * 1024**2 // 1024**3 or 2, 256,
                                                                                  "debian")
    listed = client_for(admin_user).get(f"/api/clouds/{cloud.pk}/glance/images/")
    assert listed.status_code == 200
    mine = next(r for r in listed.json()["images"] if r["id"] == image.id)
    assert mine["imported_as"] == {"id": portal.pk, "name": "listed-image"}
    assert client_for(admin_user).get("/api/clouds/nope/glance/images/").status_code == 404


def test_a_re_import_returns_the_image_made_and_a_deleted_one_is_imported_again(
        transactional_db, cloud, glance, admin_user, client_for, test_host, staging, tmp_path, driver):
    image = glance("again", qcow2_bytes(tmp_path))
    first = glance_import(actor=admin_user, via="api", cloud=cloud, glance_id=image.id)
    assert first.created and first.job is not None
    assert Job.objects.get(pk=first.job.pk).status == "succeeded"
    portal = Image.objects.get(name="again")
    link = GlanceImport.objects.get(cloud=cloud, glance_id=image.id)
    assert (link.image, link.os_hash_algo, link.os_hash_value, link.job_id) == \
        (portal, "sha512", image.hash_value, first.job.pk)

    jobs = Job.objects.count()
    client = client_for(admin_user)
    again = client.post(f"/api/clouds/{cloud.pk}/glance/images/{image.id}/import/", {"name": "other-name"},
                        format="json")
    assert again.status_code == 200, again.content
    assert again.json()["image"]["name"] == "again" and Job.objects.count() == jobs
    assert GlanceImport.objects.filter(glance_id=image.id).count() == 1

    from storage.services import image_delete

    image_delete(actor=admin_user, via="api", image=portal)
    third = client.post(f"/api/clouds/{cloud.pk}/glance/images/{image.id}/import/", {}, format="json")
    assert third.status_code == 202, third.content
    assert Job.objects.get(pk=third.json()["job"]["id"]).status == "succeeded"
    assert Image.objects.filter(name="again").count() == 1


def test_an_import_already_running_is_returned_not_repeated(transactional_db, cloud, glance, admin_user, test_host,
                                                            staging, tmp_path):
    from django.db import transaction

    image = glance("running", qcow2_bytes(tmp_path, fill=False))
    with transaction.atomic():  # the job runs at the commit: until then it is pending
        first = glance_import(actor=admin_user, via="api", cloud=cloud, glance_id=image.id)
        second = glance_import(actor=admin_user, via="api", cloud=cloud, glance_id=image.id)
    assert first.created and not second.created and second.job == first.job and second.image is None
    assert Job.objects.get(pk=first.job.pk).status == "succeeded"
    third = glance_import(actor=admin_user, via="api", cloud=cloud, glance_id=image.id)
    assert (third.created, third.job, third.image) == (False, None, Image.objects.get(name="running"))


def test_bytes_that_do_not_match_glances_checksum_are_refused_and_nothing_is_left(
        transactional_db, cloud, glance, glance_server, admin_user, client_for, test_host, staging, tmp_path,
        driver):
    data = qcow2_bytes(tmp_path)
    image = glance("tampered", data)
    stored = Path(glance_server.workdir) / "images" / image.id
    assert stored.read_bytes() == data
    with open(stored, "r+b") as fh:  # the store's bytes change behind Glance's back: same size, new content
        fh.seek(len(data) // 2)
        fh.write(os.urandom(4096))
    response = client_for(admin_user).post(f"/api/clouds/{cloud.pk}/glance/images/{image.id}/import/", {},
                                           format="json")
    assert response.status_code == 202
    job = Job.objects.get(pk=response.json()["job"]["id"])
    assert job.status == "failed"
    assert "do not match its checksum" in job.error and "nothing was imported" in job.error
    assert not Image.objects.filter(name="tampered").exists()
    assert not GlanceImport.objects.exists()
    assert pool_volumes(driver, "tampered") == []
    assert staging_files() == []


@pytest.mark.parametrize(("disk_format", "container_format", "field"), [
    ("ami", "ami", "container_format"), ("raw", "docker", "container_format"), ("aki", "bare", "disk_format")])
def test_a_format_the_portal_refuses_is_a_clear_4xx(transactional_db, cloud, glance, admin_user, client_for,
                                                    test_host, staging, disk_format, container_format, field):
    image = glance(f"refused-{disk_format}", os.urandom(64 * 1024), disk_format=disk_format,
                   container_format=container_format)
    response = client_for(admin_user).post(f"/api/clouds/{cloud.pk}/glance/images/{image.id}/import/", {},
                                           format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    text = str(body)
    assert repr(container_format if field == "container_format" else disk_format) in text
    assert "does not import" in text
    assert not Job.objects.exists() and not Image.objects.filter(source__startswith="glance:").exists()
    row = next(r for r in glance_images(actor=admin_user, cloud=cloud) if r["id"] == image.id)
    assert row["importable"] is False and "does not import" in row["refused_because"]


def test_users_may_not_browse_or_import(transactional_db, cloud, glance, alice, client_for, test_host, tmp_path):
    image = glance("users-no", qcow2_bytes(tmp_path, fill=False))
    client = client_for(alice)
    assert client.get(f"/api/clouds/{cloud.pk}/glance/images/").status_code == 403
    assert client.post(f"/api/clouds/{cloud.pk}/glance/images/{image.id}/import/", {},
                       format="json").status_code == 403
    assert client.post(f"/api/clouds/{cloud.pk}/glance/publish/", {"image": "x"}, format="json").status_code == 403


def test_the_cli_lists_imports_and_re_imports(transactional_db, cloud, glance, admin_user, test_host, staging,
                                              tmp_path):
    image = glance("Cli Image", qcow2_bytes(tmp_path))
    out = io.StringIO()
    call_command("glance", "--user", admin_user.username, "images", "local", stdout=out)
    line = next(li for li in out.getvalue().splitlines() if li.startswith(image.id))
    assert "Cli Image" in line and "qcow2/bare" in line and image.hash_value[:22] in line

    out = io.StringIO()
    call_command("glance", "import", "local", image.id, "--name", "cli-image", "--wait", stdout=out)
    assert "succeeded" in out.getvalue() and Image.objects.filter(name="cli-image").exists()
    out = io.StringIO()
    call_command("glance", "import", str(cloud.pk), image.id, stdout=out)
    assert "Already imported as image cli-image" in out.getvalue()
    with pytest.raises(CommandError, match="not found"):
        call_command("glance", "images", "nowhere", stdout=io.StringIO())
    with pytest.raises(CommandError, match="not active|no such object|Give the id"):
        call_command("glance", "import", "local", "00000000-0000-0000-0000-000000000000", stdout=io.StringIO())
