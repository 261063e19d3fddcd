"""One import end to end on the real hypervisor (qemu:///system): a VMDK uploaded with tus is converted,
streamed into the host's pool through libvirt, and the stored file is exactly what the checksum says."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from portal.models import Job
from storage.models import Image
from tests.storage.test_imageio import qemu_img, raw_disk
from tests.storage.test_imports import staging_files, tus_create, tus_patch

pytestmark = pytest.mark.qemu


def test_an_uploaded_vmdk_is_stored_in_the_pool_as_a_standalone_qcow2(qemu_host, alice, client_for, settings,
                                                                       tmp_path):
    settings.IMAGE_STAGING_DIR = str(tmp_path / "staging")
    raw = raw_disk(tmp_path / "src.raw", size=8 * 1024 * 1024)
    vmdk = tmp_path / "disk.vmdk"
    qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", str(raw), str(vmdk))
    data = vmdk.read_bytes()
    client = client_for(alice)
    url = tus_create(client, len(data), "disk.vmdk")["Location"]
    assert tus_patch(client, url, 0, data[:1000]).status_code == 204
    assert tus_patch(client, url, 1000, data[1000:]).status_code == 204
    response = client.post("/api/images/import/", {"source": "upload", "upload": url.rstrip("/").rsplit("/", 1)[1],
                                                   "name": "qemu-import", "title": "Imported"}, format="json")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["job"]["id"])
    assert job.status == "succeeded", job.error
    image = Image.objects.get(name="qemu-import")
    stored = Path(image.path)
    assert stored.is_file() and stored.parent == Path(settings.STORAGE_DIR)
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == image.checksum_sha256
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-f", "qcow2", str(stored)],
                                     check=True, capture_output=True, text=True).stdout)
    assert info["format"] == "qcow2" and "backing-filename" not in info
    assert info["virtual-size"] == image.size_bytes == 8 * 1024 * 1024
    assert (image.source_format, image.owner, image.actual_size_bytes > 0) == ("vmdk", alice, True)
    back = tmp_path / "back.raw"
    qemu_img("convert", "-f", "qcow2", "-O", "raw", str(stored), str(back))
    assert back.read_bytes() == raw.read_bytes()
    assert staging_files() == []
    assert "Copying qemu-import into the storage pool" in job.log
