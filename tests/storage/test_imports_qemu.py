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


def test_the_busybox_guest_uploaded_as_a_vmdk_boots_a_vm_from_its_converted_disk(qemu_host, alice, client_for,
                                                                                 settings, tmp_path):
    """The guest's hybrid ISO (it boots as a hard disk too: ISOLINUX's isohybrid MBR) converted to a
    streamOptimized VMDK, uploaded with tus, imported (detected as VMDK, converted to qcow2, streamed into
    the pool) and then booted under SeaBIOS from a thin clone of the imported image."""
    from django.conf import settings as conf

    from tests.guest_shell import GuestShell
    from vms import services
    from vms.models import VM

    iso = Path(conf.GUEST_DIR) / "guest.iso"
    if not iso.exists():
        pytest.fail(f"{iso} is missing: run scripts/build-guest-iso.sh (setup.sh --test does)")
    settings.IMAGE_STAGING_DIR = str(tmp_path / "staging")
    vmdk = tmp_path / "guest.vmdk"
    qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", str(iso), str(vmdk))
    data = vmdk.read_bytes()
    client = client_for(alice)
    url = tus_create(client, len(data), "guest.vmdk")["Location"]
    half = len(data) // 2
    assert tus_patch(client, url, 0, data[:half]).status_code == 204
    assert tus_patch(client, url, half, data[half:]).status_code == 204
    response = client.post("/api/images/import/", {"source": "upload", "upload": url.rstrip("/").rsplit("/", 1)[1],
                                                   "name": "guest-disk", "title": "Guest disk"}, format="json")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["job"]["id"])
    assert job.status == "succeeded", job.error
    image = Image.objects.get(name="guest-disk")
    assert (image.kind, image.source_format, image.format, image.boot_mode) == ("disk", "vmdk", "qcow2", "disk")
    assert hashlib.sha256(Path(image.path).read_bytes()).hexdigest() == image.checksum_sha256

    result = services.vm_create(actor=alice, via="api", name="from-vmdk", image=image, vcpus=1, memory_mib=128,
                                disk_gib=1, networks=[])
    created = Job.objects.get(pk=result.job.pk)
    assert created.status == "succeeded", created.error
    vm = VM.objects.get(pk=result.vm.pk)
    with GuestShell(qemu_host.uri, str(vm.uuid)) as shell:
        shell.read_until(b"PORTAL GUEST READY host=iso-guest", timeout=180)
        shell.wait_ready(timeout=60)
        assert "portalhost=iso-guest" in shell.run("cat /proc/cmdline").output
    services.vm_delete(actor=alice, via="api", vm=vm)
