"""Glance and the real hypervisor (qemu:///system): the busybox guest uploaded to a real Glance is imported
into a storage domain as a template, boots a VM, and is published back to Glance byte for byte; a
publication Glance refuses leaves no Glance image."""

from __future__ import annotations

import hashlib
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings as conf

from clouds.glance import glance_import, glance_publish
from clouds.models import Cloud, GlanceImport, GlancePublication
from portal.models import Job
from storage.domains import domain_add, domain_remove
from storage.models import Image, StoragePool

pytestmark = pytest.mark.qemu


@pytest.fixture
def cloud(transactional_db, glance_server):
    return Cloud.objects.create(name="local", auth_type=Cloud.Auth.NONE, image_endpoint=glance_server.url)


def _sha(path: Path, algo: str) -> str:
    digest = hashlib.new(algo)
    with open(path, "rb") as fh:
        while piece := fh.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


def test_the_busybox_guest_from_glance_boots_and_goes_back_to_glance_byte_for_byte(
        qemu_host, cloud, glance_server, admin_user, client_for, settings, tmp_path):
    from tests.guest_shell import GuestShell
    from vms import services
    from vms.models import VM

    iso = Path(conf.GUEST_DIR) / "guest.iso"
    if not iso.exists():
        pytest.fail(f"{iso} is missing: run scripts/build-guest-iso.sh (setup.sh --test does)")
    settings.IMAGE_STAGING_DIR = str(tmp_path / "staging")
    # The domain's directory must be readable by QEMU's user (pytest's tmp_path is not): beside the pool.
    token = secrets.token_hex(4)
    domain = Path(conf.STORAGE_DIR).parent / f"test-glance-domain-{token}"
    domain_name = f"glance-dom-{token}"
    settings.STORAGE_ALLOWED_ROOTS = [str(domain.parent)]
    qcow2 = tmp_path / "guest.qcow2"  # the hybrid ISO boots as a hard disk (isohybrid MBR)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(iso), str(qcow2)], check=True)
    conn = glance_server.connection()
    uploaded = conn.image.create_image(name="busybox-guest", filename=str(qcow2), disk_format="qcow2",
                                       container_format="bare", min_disk=1, min_ram=128, os_distro="busybox",
                                       os_type="linux", allow_duplicates=True)
    made = [uploaded.id]
    domain_add(actor=admin_user, via="cli", name=domain_name, kind=StoragePool.Kind.DIR, hosts=[qemu_host],
               path=str(domain))
    vm = None
    try:
        uploaded = conn.image.wait_for_status(conn.image.get_image(uploaded.id), status="active", wait=60)
        result = glance_import(actor=admin_user, via="api", cloud=cloud, glance_id=uploaded.id, name="busybox",
                               storage_domain=domain_name, kind="template")
        job = Job.objects.get(pk=result.job.pk)
        assert job.status == "succeeded", job.error
        image = Image.objects.get(name="busybox")
        assert (image.kind, image.pool.name, Path(image.path).parent) == ("template", domain_name, domain)
        assert (image.default_memory_mib, image.os_name, image.source) == (128, "busybox",
                                                                          f"glance:local/{uploaded.id}")
        assert _sha(Path(image.path), "sha256") == image.checksum_sha256
        assert GlanceImport.objects.get(glance_id=uploaded.id).os_hash_value == _sha(qcow2, "sha512")

        created = services.vm_create(actor=admin_user, via="api", name="from-glance", image=image, vcpus=1,
                                     memory_mib=128, disk_gib=1, networks=[])
        vm = VM.objects.get(pk=created.vm.pk)
        made_vm = Job.objects.get(pk=created.job.pk)
        assert made_vm.status == "succeeded", made_vm.error
        with GuestShell(qemu_host.uri, str(vm.uuid)) as shell:
            shell.read_until(b"PORTAL GUEST READY", timeout=180)

        response = client_for(admin_user).post(f"/api/clouds/{cloud.pk}/glance/publish/",
                                               {"image": "busybox", "name": "busybox-back", "visibility": "public"},
                                               format="json")
        assert response.status_code == 202, response.content
        job = Job.objects.get(pk=response.json()["job"]["id"])
        assert job.status == "succeeded", job.error
        pub = GlancePublication.objects.get(job=job)
        made.append(pub.glance_id)
        back = conn.image.get_image(pub.glance_id)
        assert (back.status, back.disk_format, back.container_format, back.visibility) == \
            ("active", "qcow2", "bare", "public")
        assert (back.min_disk, back.min_ram, back.os_distro, back.os_type) == (image.min_disk_gib, 128, "busybox",
                                                                               "linux")
        assert back.size == Path(image.path).stat().st_size
        assert back.hash_value == _sha(Path(image.path), "sha512") == pub.os_hash_value == job.result["os_hash_value"]
        downloaded = tmp_path / "downloaded.qcow2"
        with open(downloaded, "wb") as out:
            for piece in conn.image.download_image(back.id, stream=True).iter_content(1 << 20):
                out.write(piece)
        assert _sha(downloaded, "sha256") == image.checksum_sha256
        assert "Uploading busybox to Glance" in job.log and job.progress == 100
    finally:  # each step on its own: one failing leaves the others to run
        from storage.services import image_delete

        steps = [lambda: vm is not None and services.vm_delete(actor=admin_user, via="api", vm=vm)]
        steps += [lambda image=image: image_delete(actor=admin_user, via="api", image=image)
                  for image in Image.objects.filter(name="busybox")]
        steps += [lambda: domain_remove(actor=admin_user, via="cli", name=domain_name),
                  lambda: shutil.rmtree(domain, ignore_errors=True)]
        steps += [lambda image_id=image_id: conn.image.delete_image(image_id, ignore_missing=True)
                  for image_id in made]
        for step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 (clean-up after a failure: report, go on)
                print(f"clean-up step failed: {exc}")


def test_a_publication_glance_refuses_leaves_no_glance_image(qemu_host, cloud, glance_server, admin_user, tmp_path,
                                                             settings):
    from storage.services import image_delete, image_register

    src = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), "8M"], check=True)
    image = image_register(actor=None, host=qemu_host, name="will-fail", title="Will fail", source_path=str(src),
                           replace=True)
    conn = glance_server.connection()
    try:
        # The stored file is no longer a qcow2 (damaged): Glance's format inspection refuses the upload.
        Path(image.path).write_bytes(b"\x01" * (1 << 20))
        job = glance_publish(actor=admin_user, via="api", cloud=cloud, image=image, name="will-fail-glance")
        job.refresh_from_db()
        assert job.status == "failed"
        assert "cloud local" in job.error
        pub = GlancePublication.objects.get(job=job)
        assert pub.status == "failed" and pub.glance_id
        assert [i.id for i in conn.image.images() if i.name == "will-fail-glance"] == []
    finally:
        image_delete(actor=admin_user, via="api", image=image)
