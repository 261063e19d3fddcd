"""Image imports through the REST API (host path, tus upload, URL) on libvirt's test driver: every format
made with qemu-img, genisoimage and tar becomes a library image; every bad input of issue #10 is refused
with a clear error, leaving no Image row, no pool volume and no staging file."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import subprocess
import threading
from pathlib import Path

import pytest
from django.conf import settings

from portal.models import Job
from storage.models import Image, Upload
from tests.storage.test_imageio import make_ova, qemu_img, raw_disk

MIB = 1024 * 1024
GIB = 1024**3


@pytest.fixture
def dirs(settings, tmp_path):
    """An import directory administrators may name and a private staging directory."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    settings.IMAGE_IMPORT_DIRS = [str(incoming)]
    settings.IMAGE_STAGING_DIR = str(tmp_path / "staging")
    return incoming


def staging_files() -> list[str]:
    """Every file left under the staging directory (the empty `uploads` folder itself does not count)."""
    found = []
    for root, _dirs, files in os.walk(settings.IMAGE_STAGING_DIR):
        found += [os.path.join(root, f) for f in files]
    return found


def pool_volumes(driver, name: str) -> list[str]:
    """The volumes an import of image `name` wrote: named by the image and a random token of 8 hex digits."""
    import re

    own = re.compile(rf"image-{re.escape(settings.INSTANCE_ID)}-{re.escape(name)}-[0-9a-f]{{8}}\.")
    return [v.name for v in driver.list_volumes(pool=settings.STORAGE_POOL) if own.match(v.name)]


def import_api(client, **body):
    body.setdefault("title", body["name"])
    return client.post("/api/images/import/", body, format="json")


def job_of(response) -> Job:
    assert response.status_code == 202, response.content
    return Job.objects.get(pk=response.json()["job"]["id"])


def make_source(kind: str, tmp_path: Path, dest: Path) -> Path:
    """A small image of `kind`, written to `dest`."""
    raw = raw_disk(tmp_path / "src.raw")
    if kind == "raw":
        raw.rename(dest)
    elif kind == "ext4":
        subprocess.run(["mke2fs", "-q", "-t", "ext4", str(dest), "4M"], check=True)
    elif kind == "iso":
        (tmp_path / "isodir").mkdir()
        (tmp_path / "isodir" / "hello.txt").write_text("hello")
        subprocess.run(["genisoimage", "-quiet", "-V", "TEST", "-o", str(dest), str(tmp_path / "isodir")], check=True)
    elif kind == "ova":
        make_ova(tmp_path, raw).rename(dest)
    else:
        fmt, _, sub = kind.partition("-")
        options = ["-o", f"subformat={sub}"] if sub else []
        qemu_img("convert", "-f", "raw", "-O", fmt, *options, str(raw), str(dest))
    return dest


FORMATS = [  # (what, file name, source_format, kind, virtual size)
    ("raw", "disk.img", "raw", "disk", 2 * MIB),
    ("ext4", "root.img", "raw", "disk", 4 * MIB),
    ("qcow2", "disk.qcow2", "qcow2", "disk", 2 * MIB),
    ("vmdk-monolithicSparse", "sparse.vmdk", "vmdk", "disk", 2 * MIB),
    ("vmdk-streamOptimized", "stream.vmdk", "vmdk", "disk", 2 * MIB),
    ("vdi", "disk.vdi", "vdi", "disk", 2 * MIB),
    ("vhdx", "disk.vhdx", "vhdx", "disk", 2 * MIB),
    ("iso", "cd.iso", "iso", "iso", None),
]


@pytest.mark.parametrize("what,filename,source_format,kind,virtual", FORMATS, ids=[f[0] for f in FORMATS])
def test_every_format_is_imported_from_a_host_path(transactional_db, test_host, admin_user, client_for, dirs,
                                                   driver, tmp_path, what, filename, source_format, kind, virtual):
    source = make_source(what, tmp_path, dirs / filename)
    job = job_of(import_api(client_for(admin_user), source="path", path=str(source), name="imported"))
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    image = Image.objects.get(name="imported")
    assert (image.kind, image.source_format, image.owner, image.visibility) == (kind, source_format, None, "public")
    assert image.format == ("raw" if kind == "iso" else "qcow2")
    assert image.size_bytes == (virtual or source.stat().st_size)
    assert len(image.checksum_sha256) == 64 and image.actual_size_bytes > 0
    assert image.source == str(source)
    assert job.result["image_id"] == image.pk and job.target_id == str(image.pk)
    assert pool_volumes(driver, "imported") and staging_files() == []
    assert source.exists()  # a host file is read, never moved
    body = client_for(admin_user).get("/api/images/imported/").json()
    assert body["checksum_sha256"] == image.checksum_sha256 and body["source_format"] == source_format


def test_an_ova_becomes_a_template_and_a_second_disk_image(transactional_db, test_host, admin_user, client_for,
                                                          dirs, driver, tmp_path):
    source = make_source("ova", tmp_path, dirs / "app.ova")
    job = job_of(import_api(client_for(admin_user), source="path", path=str(source), name="appliance"))
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    template = Image.objects.get(name="appliance")
    assert (template.kind, template.default_vcpus, template.default_memory_mib) == ("template", 2, 256)
    assert "2 network adapters" in template.description and template.os_name == "Debian 12"
    assert template.source_format == "ova" and template.size_bytes == 2 * MIB
    extra = Image.objects.get(name="appliance-disk2")
    assert extra.kind == "disk" and extra.size_bytes == MIB
    assert job.result["more_disks"] == ["appliance-disk2"] and "appliance-disk2" in job.result["message"]
    assert staging_files() == []


def tus(client, method: str, url: str, **headers):
    headers = {"HTTP_TUS_RESUMABLE": "1.0.0", **{f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()}}
    return getattr(client, method)(url, **headers)


def tus_create(client, length: int, filename: str = "disk.qcow2"):
    import base64

    meta = f"filename {base64.b64encode(filename.encode()).decode()},kind"
    return tus(client, "post", "/api/uploads/", **{"Upload-Length": str(length), "Upload-Metadata": meta})


def tus_patch(client, url: str, offset: int, data: bytes, content_type: str = "application/offset+octet-stream"):
    return client.generic("PATCH", url, data, content_type=content_type, HTTP_TUS_RESUMABLE="1.0.0",
                          HTTP_UPLOAD_OFFSET=str(offset))


def test_a_user_uploads_with_tus_resumes_after_a_partial_patch_and_imports(transactional_db, test_host, alice,
                                                                           client_for, dirs, driver, tmp_path):
    data = make_source("qcow2", tmp_path, tmp_path / "disk.qcow2").read_bytes()
    client = client_for(alice)
    created = tus_create(client, len(data))
    assert created.status_code == 201, created.content
    assert created["Tus-Resumable"] == "1.0.0"
    url = created["Location"]
    upload = Upload.objects.get()
    assert (upload.owner, upload.filename, upload.length, upload.metadata) == (alice, "disk.qcow2", len(data),
                                                                               {"filename": "disk.qcow2", "kind": ""})
    half = len(data) // 3
    first = tus_patch(client, url, 0, data[:half])
    assert first.status_code == 204 and first["Upload-Offset"] == str(half)
    # The connection dropped: the client asks where to resume; a PATCH at the wrong offset is refused.
    head = tus(client, "head", url)
    assert head.status_code == 200 and head["Upload-Offset"] == str(half) and head["Upload-Length"] == str(len(data))
    assert head["Cache-Control"] == "no-store" and "filename" in head["Upload-Metadata"]
    wrong = tus_patch(client, url, 0, data)
    assert wrong.status_code == 409 and wrong.json()["code"] == "conflict" and wrong.json()["offset"] == half
    # An import before the last byte is refused, and nothing is lost.
    early = import_api(client, source="upload", upload=str(upload.pk), name="mine")
    assert early.status_code == 400 and "incomplete" in early.json()["detail"]
    rest = tus_patch(client, url, half, data[half:])
    assert rest.status_code == 204 and rest["Upload-Offset"] == str(len(data))
    upload.refresh_from_db()
    assert upload.status == "complete"
    path = os.path.join(settings.IMAGE_STAGING_DIR, "uploads", str(upload.pk))
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    job = job_of(import_api(client, source="upload", upload=str(upload.pk), name="mine", format="qcow2"))
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    image = Image.objects.get(name="mine")
    assert (image.owner, image.visibility, image.source) == (alice, "private", "upload disk.qcow2")
    upload.refresh_from_db()
    assert upload.status == "done" and staging_files() == []
    # Bob neither sees the upload nor the image.
    assert client_for(_other(alice)).get(url).status_code == 404
    listed = [i["name"] for i in client.get("/api/images/").json()["results"]]
    assert "mine" in listed
    # The image counts against alice's disk quota (1 GiB, rounded up).
    from quotas.selectors import quota_usage

    disk = next(u for u in quota_usage(user=alice) if u.resource == "disk_gib")
    assert disk.used == 1


def _other(user):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user("mallory", password="x")


def test_a_body_that_breaks_off_keeps_what_arrived(transactional_db, alice, dirs):
    from storage import uploads

    class Dropped:
        def __init__(self, data: bytes, cut: int):
            self.data, self.cut, self.pos = data, cut, 0

        def read(self, n: int) -> bytes:
            if self.pos >= self.cut:
                raise OSError("connection reset")
            piece = self.data[self.pos:min(self.pos + n, self.cut)]
            self.pos += len(piece)
            return piece

    upload = uploads.upload_create(actor=alice, via="api", length=3 * MIB, metadata={"filename": "x.raw"})
    row = uploads.upload_append(actor=alice, upload=upload, offset=0, stream=Dropped(b"a" * 3 * MIB, MIB + 7))
    assert (row.offset, row.status) == (MIB + 7, "receiving")
    import io

    row = uploads.upload_append(actor=alice, upload=row, offset=MIB + 7, stream=io.BytesIO(b"b" * (2 * MIB - 7)))
    assert (row.offset, row.status) == (3 * MIB, "complete")


def test_tus_protocol_refusals_are_json(transactional_db, alice, client_for, dirs, settings):
    client = client_for(alice)
    options = client.options("/api/uploads/")
    assert options.status_code == 204 and options["Tus-Version"] == "1.0.0"
    assert "creation" in options["Tus-Extension"] and "termination" in options["Tus-Extension"]
    assert options["Tus-Max-Size"] == str(settings.IMAGE_MAX_BYTES)
    missing = client.post("/api/uploads/", HTTP_UPLOAD_LENGTH="10")
    assert missing.status_code == 412 and missing.json()["code"] == "tus_version"
    too_big = tus_create(client, settings.IMAGE_MAX_BYTES + 1)
    assert too_big.status_code == 413 and too_big.json()["code"] == "too_large"
    over_quota = tus_create(client, 21 * GIB)  # alice may use 20 GiB
    assert over_quota.status_code == 403 and over_quota.json()["code"] == "quota_exceeded"
    assert tus(client, "post", "/api/uploads/").status_code == 400
    bad_meta = tus(client, "post", "/api/uploads/", **{"Upload-Length": "10", "Upload-Metadata": "filename !!!"})
    assert bad_meta.status_code == 400 and "base64" in bad_meta.json()["detail"]
    url = tus_create(client, 10)["Location"]
    assert tus_patch(client, url, 0, b"x" * 10, content_type="application/json").status_code == 415
    beyond = tus_patch(client, url, 0, b"x" * 11)
    assert beyond.status_code == 413 and "announced" in beyond.json()["detail"]
    assert Upload.objects.get().offset == 0
    deleted = tus(client, "delete", url)
    assert deleted.status_code == 204 and Upload.objects.get().status == "cancelled"
    assert staging_files() == []
    assert tus_patch(client, url, 0, b"x").status_code == 409
    assert client.get("/api/uploads/").json()[0]["status"] == "cancelled"


def test_expired_uploads_are_removed_by_the_housekeeping(transactional_db, alice, dirs):
    from datetime import timedelta

    from django.utils import timezone

    from cluster.housekeeping import housekeeping_run
    from storage import uploads

    old = uploads.upload_create(actor=alice, via="api", length=100)
    fresh = uploads.upload_create(actor=alice, via="api", length=100)
    Upload.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert housekeeping_run()["uploads_expire"] == 1
    assert list(Upload.objects.values_list("pk", flat=True)) == [fresh.pk]
    assert staging_files() == [uploads.upload_path(fresh)]


# --- bad input: a clear error, no Image row, no pool volume, no staging file --------------------------

def _bad_file(kind: str, tmp_path: Path, dest: Path) -> Path:
    if kind == "text":
        dest.write_text("just some text, named like an image\n" * 50)
    elif kind.startswith("backing:"):
        qemu_img("create", "-f", "qcow2", "-u", "-b", kind.removeprefix("backing:"), "-F", "raw", str(dest), "1M")
    elif kind == "data-file":
        qemu_img("create", "-f", "qcow2", "-o", f"data_file={tmp_path / 'data.raw'}", str(dest), "1M")
    elif kind == "vmdk-descriptor":
        dest.write_text('# Disk DescriptorFile\nversion=1\ncreateType="monolithicFlat"\nRW 2048 FLAT "/etc/shadow" 0\n')
    elif kind == "shadow":
        dest.write_bytes(Path("/etc/shadow").read_bytes())
    elif kind == "exabyte":
        qemu_img("create", "-f", "qcow2", str(dest), "1M")
        with open(dest, "r+b") as fh:
            fh.seek(24)
            fh.write((1 << 60).to_bytes(8, "big"))
    elif kind == "truncated":
        make_source("qcow2", tmp_path, tmp_path / "whole.qcow2")
        data = (tmp_path / "whole.qcow2").read_bytes()
        dest.write_bytes(data[: len(data) // 3])
    elif kind == "ova-traversal":
        import io
        import tarfile

        with tarfile.open(dest, "w", format=tarfile.USTAR_FORMAT) as tar:
            info = tarfile.TarInfo("../../x")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    elif kind == "ova-cpus":
        make_ova(tmp_path, raw_disk(tmp_path / "r.raw"), cpus=10000).rename(dest)
    return dest


BAD = [  # (file, declared format, expected words)
    ("text", "qcow2", "not a disk image"),
    ("backing:/etc/shadow", None, "backing file"),
    ("backing:nbd://127.0.0.1:10809/x", None, "backing file"),
    ("backing:http://127.0.0.1:9/x.img", None, "backing file"),
    ("data-file", None, "external data file"),
    ("vmdk-descriptor", None, "descriptor"),
    ("shadow", "raw", "not a disk image"),
    ("exabyte", None, "virtual size|corrupt"),
    ("truncated", None, "truncated|corrupt"),
    ("ova-traversal", None, "unsafe"),
    ("ova-cpus", None, "10000 CPUs"),
]


@pytest.mark.parametrize("kind,declared,words", BAD, ids=[b[0] for b in BAD])
def test_bad_uploads_are_refused_and_leave_nothing(transactional_db, test_host, alice, client_for, dirs, driver,
                                                   tmp_path, kind, declared, words):
    data = _bad_file(kind, tmp_path, tmp_path / "bad.img").read_bytes()
    client = client_for(alice)
    url = tus_create(client, len(data))["Location"]
    assert tus_patch(client, url, 0, data).status_code == 204
    upload = Upload.objects.get()
    body = {"source": "upload", "upload": str(upload.pk), "name": "bad"}
    if declared:
        body["format"] = declared
    job = job_of(import_api(client, **body))
    job.refresh_from_db()
    assert job.status == "failed"
    import re

    assert re.search(words, job.error), job.error
    assert settings.IMAGE_STAGING_DIR not in job.error and "/etc/shadow" not in job.error  # no host paths
    assert not Image.objects.filter(name__startswith="bad").exists()
    assert pool_volumes(driver, "bad") == [] and staging_files() == []
    upload.refresh_from_db()
    assert upload.status == "cancelled"


def test_a_declared_format_that_is_not_the_real_one_is_refused(transactional_db, test_host, admin_user, client_for,
                                                               dirs, tmp_path):
    source = make_source("qcow2", tmp_path, dirs / "disk.img")
    job = job_of(import_api(client_for(admin_user), source="path", path=str(source), name="liar", format="raw"))
    job.refresh_from_db()
    assert job.status == "failed" and "declared as raw but is qcow2" in job.error
    assert not Image.objects.filter(name="liar").exists() and staging_files() == []


def test_paths_outside_the_import_directories_and_for_users_are_refused(transactional_db, test_host, admin_user,
                                                                        alice, client_for, dirs, tmp_path):
    outside = make_source("qcow2", tmp_path, tmp_path / "outside.qcow2")
    (dirs / "link.qcow2").symlink_to(outside)
    (dirs / "shadow.img").symlink_to("/etc/shadow")
    for path in (str(outside), str(dirs / "link.qcow2"), str(dirs / "shadow.img"), str(dirs / ".." / "outside.qcow2")):
        response = import_api(client_for(admin_user), source="path", path=path, name="outside")
        assert response.status_code == 400 and "not inside the directories" in response.json()["detail"]
    inside = make_source("qcow2", tmp_path, dirs / "fine.qcow2")
    response = import_api(client_for(alice), source="path", path=str(inside), name="fine")
    assert response.status_code == 403 and "Only administrators" in response.json()["detail"]
    assert not Job.objects.filter(kind="image.import").exists()


def test_the_same_name_twice_is_a_clear_error(transactional_db, test_host, alice, client_for, dirs, tmp_path):
    data = make_source("qcow2", tmp_path, tmp_path / "d.qcow2").read_bytes()
    client = client_for(alice)
    ids = []
    for _ in range(2):
        url = tus_create(client, len(data))["Location"]
        tus_patch(client, url, 0, data)
        ids.append(url.rstrip("/").rsplit("/", 1)[1])
    # While the first import is still queued, a second with the same name is refused.
    Job.objects.create(kind="image.import", actor=alice, via="api", params={"name": "twin"}, status="running")
    busy = import_api(client, source="upload", upload=ids[0], name="twin")
    assert busy.status_code == 400 and "being imported already" in busy.json()["detail"]
    Job.objects.filter(kind="image.import").delete()
    assert job_of(import_api(client, source="upload", upload=ids[0], name="twin")).pk
    again = import_api(client, source="upload", upload=ids[1], name="twin")
    assert again.status_code == 400 and "exists already" in again.json()["detail"]
    assert Upload.objects.get(pk=ids[1]).status == "complete"  # not consumed: it can be imported under another name


def test_an_image_beyond_the_quota_is_refused_after_probing(transactional_db, test_host, alice, client_for, dirs,
                                                           driver, tmp_path):
    big = tmp_path / "big.qcow2"
    qemu_img("create", "-f", "qcow2", str(big), "30G")  # a tiny file with 30 GiB virtual; alice has 20
    data = big.read_bytes()
    client = client_for(alice)
    url = tus_create(client, len(data))["Location"]
    tus_patch(client, url, 0, data)
    job = job_of(import_api(client, source="upload", upload=url.rstrip("/").rsplit("/", 1)[1], name="big"))
    job.refresh_from_db()
    assert job.status == "failed" and "Quota exceeded for Disk: requested 30 GiB" in job.error
    assert not Image.objects.filter(name="big").exists() and pool_volumes(driver, "big") == [] and staging_files() == []


# --- URL imports, from a server on loopback -------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    redirects: dict[str, str] = {}  # path -> Location of a 302
    odd_length: dict[str, tuple[str, bytes]] = {}  # path -> (a Content-Length header as sent, the body)
    release = threading.Event()

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path in self.redirects:
            self.send_response(302)
            self.send_header("Location", self.redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path in self.odd_length:
            header, body = self.odd_length[self.path]
            self.send_response(200)
            self.send_header("Content-Length", header)
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
            return
        if self.path == "/drip":  # a byte every 0.2 s: never stalls, never finishes (up to 10 s)
            self.send_response(200)
            self.send_header("Content-Length", str(10 * MIB))
            self.end_headers()
            self.wfile.write(b"QFI\xfb")
            for _ in range(50):
                self.wfile.write(b"\0")
                self.wfile.flush()
                if self.release.wait(0.2):
                    break
            return
        if self.path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", str(10 * MIB))
            self.end_headers()
            self.wfile.write(b"QFI\xfb" + b"\0" * 1000)
            self.wfile.flush()
            self.release.wait(20)
            return
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _serve(address: str):
    server = http.server.ThreadingHTTPServer((address, 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture
def web():
    _Handler.release.clear()
    for table in (_Handler.files, _Handler.redirects, _Handler.odd_length):
        table.clear()
    server = _serve("127.0.0.1")
    yield f"http://127.0.0.1:{server.server_address[1]}", _Handler.files
    _Handler.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def web2(web):
    """A second server of the same files on another loopback address, 127.0.0.2."""
    server = _serve("127.0.0.2")
    yield f"http://127.0.0.2:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_imports_stream_check_the_checksum_and_refuse_non_images_and_stalls(
        transactional_db, test_host, alice, client_for, dirs, driver, tmp_path, web, settings):
    base, files = web
    files["/disk.qcow2"] = make_source("qcow2", tmp_path, tmp_path / "d.qcow2").read_bytes()
    files["/page.html"] = b"<html>not an image</html>" * 40
    good_sha = hashlib.sha256(files["/disk.qcow2"]).hexdigest()
    client = client_for(alice)
    settings.IMAGE_URL_TIMEOUT_SECONDS = 1
    settings.IMAGE_URL_ALLOWED_NETWORKS = ["127.0.0.0/8"]  # a user's import reaches loopback only when allowed

    def run(**body):
        job = job_of(import_api(client, source="url", **body))
        job.refresh_from_db()
        return job

    wrong = run(url=f"{base}/disk.qcow2", name="from-url", sha256="0" * 64)
    assert wrong.status == "failed" and f"SHA-256 is {good_sha}" in wrong.error
    html = run(url=f"{base}/page.html", name="from-url")
    assert html.status == "failed" and "not a disk image" in html.error
    missing = run(url=f"{base}/nothing", name="from-url")
    assert missing.status == "failed" and "answered 404" in missing.error
    stall = run(url=f"{base}/stall", name="from-url")
    assert stall.status == "failed" and "stalled" in stall.error
    assert not Image.objects.filter(name="from-url").exists() and staging_files() == []
    good = run(url=f"{base}/disk.qcow2", name="from-url", sha256=good_sha)
    assert good.status == "succeeded", good.error
    assert Image.objects.get(name="from-url").source == f"{base}/disk.qcow2"
    for url in ("file:///etc/shadow", "ftp://127.0.0.1/x", "gopher://x"):
        refused = import_api(client, source="url", url=url, name="nope")
        assert refused.status_code == 400 and "Only http:// and https://" in refused.json()["detail"]


# --- ownership through the API ---------------------------------------------------------------------------

def test_users_change_and_delete_their_own_images_only(transactional_db, test_host, alice, client_for, dirs,
                                                       tmp_path):
    data = make_source("qcow2", tmp_path, tmp_path / "d.qcow2").read_bytes()
    client = client_for(alice)
    url = tus_create(client, len(data))["Location"]
    tus_patch(client, url, 0, data)
    job_of(import_api(client, source="upload", upload=url.rstrip("/").rsplit("/", 1)[1], name="alices"))
    changed = client.patch("/api/images/alices/", {"title": "Mine", "visibility": "public"}, format="json")
    assert changed.status_code == 200 and changed.json()["title"] == "Mine" and changed.json()["owner"] == "alice"
    library = client.delete("/api/images/test-blank/")
    assert library.status_code == 403 and "owner" in library.json()["detail"]
    assert client.delete("/api/images/alices/").status_code == 204
    assert not Image.objects.filter(name="alices").exists()


# --- image_register: the same checks, synchronously ---------------------------------------------------------

@pytest.mark.parametrize("kind,fmt,words", [("text", "qcow2", "not a disk image"),
                                            ("backing:/etc/shadow", "qcow2", "backing file"),
                                            ("shadow", "raw", "not a disk image")])
def test_image_register_refuses_what_the_import_refuses(transactional_db, test_host, driver, dirs, tmp_path, kind,
                                                        fmt, words):
    from portal.exceptions import ValidationFailed
    from storage.services import image_register

    source = _bad_file(kind, tmp_path, tmp_path / "bad.img") if kind != "shadow" else Path("/etc/shadow")
    with pytest.raises(ValidationFailed, match=words):
        image_register(actor=None, host=test_host, name="bad", title="Bad", source_path=str(source), fmt=fmt)
    assert not Image.objects.filter(name="bad").exists() and pool_volumes(driver, "bad") == []
    assert staging_files() == []


# --- the command line -----------------------------------------------------------------------------------

def test_the_image_command_imports_lists_and_deletes(transactional_db, test_host, alice, admin_user, dirs, tmp_path):
    from django.core.management import CommandError, call_command

    source = make_source("vdi", tmp_path, dirs / "disk.vdi")
    out = io.StringIO()
    call_command("image", "import", str(source), "--name", "cli-disk", "--format", "vdi", "--owner", "alice",
                 "--wait", stdout=out)
    text = out.getvalue()
    assert "Importing image cli-disk." in text and "succeeded 100%" in text
    image = Image.objects.get(name="cli-disk")
    assert (image.owner, image.visibility, image.source_format) == (alice, "private", "vdi")
    out = io.StringIO()
    call_command("vm", "--user", "alice", "image", "list", stdout=out)
    assert "cli-disk" in out.getvalue() and "alice" in out.getvalue()
    out = io.StringIO()
    call_command("image", "list", stdout=out)  # the operator at the server's shell sees users' private images
    assert "cli-disk" in out.getvalue()
    with pytest.raises(CommandError, match="Only administrators import files") as refused:
        call_command("vm", "--user", "alice", "image", "import", str(source), "--name", "again", "--wait")
    assert refused.value.returncode == 4
    with pytest.raises(CommandError, match="declared as qcow2 but is vdi"):
        call_command("image", "import", str(source), "--name", "liar", "--format", "qcow2", "--wait",
                     stdout=io.StringIO())
    call_command("vm", "--user", "alice", "image", "delete", "cli-disk", stdout=out)
    assert "Deleted image cli-disk" in out.getvalue() and not Image.objects.filter(name="cli-disk").exists()


def test_a_second_patch_while_one_is_writing_is_refused_and_changes_nothing(transactional_db, alice, client_for,
                                                                            dirs):
    import fcntl

    from storage import uploads

    client = client_for(alice)
    url = tus_create(client, 100)["Location"]
    upload = Upload.objects.get()
    with open(uploads.upload_path(upload), "r+b") as writing:  # what a PATCH in progress holds
        fcntl.flock(writing, fcntl.LOCK_EX)
        busy = tus_patch(client, url, 0, b"x" * 50)
        assert busy.status_code == 409 and "Another request is writing" in busy.json()["detail"]
    assert Upload.objects.get().offset == 0
    assert tus_patch(client, url, 0, b"x" * 50)["Upload-Offset"] == "50"


# --- the security review's findings (issue #10) -----------------------------------------------------------

def _complete_upload(client, data: bytes) -> str:
    url = tus_create(client, len(data))["Location"]
    assert tus_patch(client, url, 0, data).status_code == 204
    return url.rstrip("/").rsplit("/", 1)[1]


def test_an_import_never_deletes_or_overwrites_another_images_volume(transactional_db, test_host, admin_user,
                                                                    client_for, dirs, driver, tmp_path):
    from storage.imports import remove_unlisted_volumes
    from storage.services import image_volume_name, pool_ensure

    # A public template's base volume is named image-<template>-<8 hex>.qcow2 ...
    pool = pool_ensure(host=test_host)
    base = image_volume_name("tpl-1234abcd")
    info = driver.create_volume(pool=pool.name, name=base, capacity_bytes=7 * MIB, fmt="qcow2")
    Image.objects.create(name="tpl", kind="template", pool=pool, volume_name=base, path=info.path, format="qcow2",
                         size_bytes=7 * MIB)
    # ... and an image named "tpl-1234abcd" must get a volume of its own, leaving the template's alone.
    source = make_source("qcow2", tmp_path, dirs / "disk.qcow2")
    job = job_of(import_api(client_for(admin_user), source="path", path=str(source), name="tpl-1234abcd"))
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    imported = Image.objects.get(name="tpl-1234abcd")
    assert imported.volume_name != base and pool_volumes(driver, "tpl-1234abcd") == [imported.volume_name]
    assert driver.volume_info(pool=pool.name, name=base).capacity_bytes == 7 * MIB
    # A failed import's clean-up never removes a volume a row names.
    remove_unlisted_volumes(test_host, [(pool, base), (pool, imported.volume_name)])
    assert driver.volume_info(pool=pool.name, name=base).capacity_bytes == 7 * MIB
    assert driver.volume_info(pool=pool.name, name=imported.volume_name)


def test_quota_and_staging_space_are_checked_before_anything_is_converted(
        transactional_db, test_host, alice, admin_user, client_for, dirs, driver, tmp_path, monkeypatch):
    import shutil as shutil_module

    from storage import imageio

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted before the size was checked")

    real_convert = imageio.convert
    monkeypatch.setattr(imageio, "convert", no_conversion)
    big = tmp_path / "big.qcow2"
    qemu_img("create", "-f", "qcow2", str(big), "30G")  # tiny file, 30 GiB virtual; alice has 20 GiB
    client = client_for(alice)
    job = job_of(import_api(client, source="upload", upload=_complete_upload(client, big.read_bytes()), name="big"))
    job.refresh_from_db()
    assert job.status == "failed" and "Quota exceeded for Disk: requested 30 GiB" in job.error
    # The library has no quota, but the staging directory must hold the conversion.
    (dirs / "big.qcow2").write_bytes(big.read_bytes())
    real_usage = shutil_module.disk_usage
    monkeypatch.setattr(shutil_module, "disk_usage",
                        lambda path: real_usage(path)._replace(free=GIB))  # 1 GiB free
    job = job_of(import_api(client_for(admin_user), source="path", path=str(dirs / "big.qcow2"), name="big"))
    job.refresh_from_db()
    assert job.status == "failed" and "not enough free staging space" in job.error
    assert not Image.objects.filter(name="big").exists() and staging_files() == []
    # And qemu-img convert itself can write no more than the probed virtual size allows.
    raw = tmp_path / "full.raw"
    raw.write_bytes(os.urandom(2 * MIB))
    with pytest.raises(Exception, match="grew larger than its virtual size"):
        real_convert(str(raw), "raw", str(tmp_path / "out.qcow2"), max_bytes=256 * 1024)
    assert not (tmp_path / "out.qcow2").exists()


def test_users_url_imports_reach_public_addresses_only(transactional_db, test_host, alice, admin_user, client_for,
                                                        dirs, driver, tmp_path, web, web2, settings, monkeypatch):
    from storage import imports

    base, files = web
    files["/disk.qcow2"] = make_source("qcow2", tmp_path, tmp_path / "d.qcow2").read_bytes()
    settings.IMAGE_URL_ALLOWED_NETWORKS = []
    client = client_for(alice)

    def run(c, url, name="from-url"):
        job = job_of(import_api(c, source="url", url=url, name=name))
        job.refresh_from_db()
        return job

    for url in (f"{base}/disk.qcow2", "http://169.254.169.254/latest/meta-data/", "http://[::1]:9/x",
                "http://0.0.0.0:9/x", "http://10.1.2.3/x.qcow2"):
        refused = run(client, url)
        assert refused.status == "failed" and "inside the portal's network" in refused.error, (url, refused.error)
        assert "answered" not in refused.error and "Connection" not in refused.error
    # A public-looking first hop (here: 127.0.0.2, allowed) that redirects inside is refused on the redirect.
    settings.IMAGE_URL_ALLOWED_NETWORKS = ["127.0.0.2/32"]
    _Handler.redirects["/to-inside"] = f"{base}/disk.qcow2"
    refused = run(client, f"{web2}/to-inside")
    assert refused.status == "failed" and "inside the portal's network" in refused.error
    _Handler.redirects["/to-file"] = "file:///etc/shadow"
    assert "not http:// or https://" in run(client, f"{web2}/to-file").error
    for i in range(7):
        _Handler.redirects[f"/loop{i}"] = f"{web2}/loop{i + 1}"
    assert "redirects more than 5 times" in run(client, f"{web2}/loop0").error
    # Redirects within allowed addresses are followed.
    _Handler.redirects["/to-disk"] = "/disk.qcow2"
    assert run(client, f"{web2}/to-disk", name="via-redirect").status == "succeeded"
    # A host name checked once cannot connect elsewhere later: every connection's peer is checked too.
    settings.IMAGE_URL_ALLOWED_NETWORKS = []
    monkeypatch.setattr(imports, "check_url_target", lambda url: None)
    refused = run(client, f"{base}/disk.qcow2")
    assert refused.status == "failed" and "inside the portal's network" in refused.error
    monkeypatch.undo()
    # Administrators may import from internal mirrors.
    assert run(client_for(admin_user), f"{base}/disk.qcow2", name="mirrored").status == "succeeded"
    assert not Image.objects.filter(name="from-url").exists() and staging_files() == []
    # The address rule itself.
    for address, allowed in [("8.8.8.8", True), ("2001:4860:4860::8888", True), ("127.0.0.1", False),
                             ("::ffff:127.0.0.1", False), ("10.0.0.1", False), ("192.168.1.1", False),
                             ("100.64.0.1", False), ("169.254.169.254", False), ("fe80::1", False),
                             ("224.0.0.1", False), ("0.0.0.0", False), ("::", False), ("240.0.0.1", False),
                             ("fd00::1", False)]:
        assert imports.address_allowed(address) is allowed, address
    settings.IMAGE_URL_ALLOWED_NETWORKS = ["10.0.0.0/8", "not-a-network"]
    assert imports.address_allowed("10.9.8.7") and not imports.address_allowed("192.168.1.1")


def test_a_download_has_a_deadline_and_a_minimum_rate(transactional_db, test_host, admin_user, client_for, dirs,
                                                      web, settings):
    base, _files = web
    settings.IMAGE_URL_TIMEOUT_SECONDS = 1  # a byte every 0.2 s never stalls ...
    settings.IMAGE_URL_MAX_SECONDS = 2  # ... but the whole download may take 2 s
    client = client_for(admin_user)
    job = job_of(import_api(client, source="url", url=f"{base}/drip", name="dripping"))
    job.refresh_from_db()
    assert job.status == "failed" and "took longer than 2 seconds" in job.error
    settings.IMAGE_URL_MAX_SECONDS = 3600
    settings.IMAGE_URL_GRACE_SECONDS = 1
    settings.IMAGE_URL_MIN_BYTES_PER_SECOND = 64 * 1024
    job = job_of(import_api(client, source="url", url=f"{base}/drip", name="dripping"))
    job.refresh_from_db()
    assert job.status == "failed" and "too slow" in job.error and "KiB/s" in job.error
    assert staging_files() == []


@pytest.mark.parametrize("header", ["²", "-5", "1e3", "12 34", "99999999999999999999999999"])
def test_an_odd_content_length_does_not_crash_the_import(transactional_db, test_host, admin_user, client_for, dirs,
                                                         tmp_path, web, header):
    base, _files = web
    body = make_source("qcow2", tmp_path, tmp_path / "d.qcow2").read_bytes()
    _Handler.odd_length["/odd.qcow2"] = (header, body)
    job = job_of(import_api(client_for(admin_user), source="url", url=f"{base}/odd.qcow2", name="odd"))
    job.refresh_from_db()
    assert job.status in ("succeeded", "failed"), (job.status, job.error)  # never an internal error
    if job.status == "failed":
        assert "Internal error" not in job.error
    assert staging_files() == []


def test_a_host_file_is_opened_once_and_only_its_private_copy_is_read(transactional_db, test_host, admin_user,
                                                                      client_for, dirs, tmp_path, monkeypatch):
    from portal.exceptions import ValidationFailed
    from storage import imageio, imports

    source = make_source("qcow2", tmp_path, dirs / "disk.qcow2")
    read: list[str] = []
    for fn in ("detect", "probe", "convert"):
        real = getattr(imageio, fn)
        monkeypatch.setattr(imageio, fn, lambda path, *a, _real=real, **kw: (read.append(path), _real(path, *a, **kw))[1])
    job = job_of(import_api(client_for(admin_user), source="path", path=str(source), name="copied"))
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert read and all(p.startswith(settings.IMAGE_STAGING_DIR + os.sep) for p in read), read
    assert Image.objects.get(name="copied").source == str(source) and staging_files() == []
    # A path swapped for a symlink, or a directory on it swapped for one, after the check is refused.
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setattr(imports, "check_import_path", lambda path: str(path))  # as if checked before the swap
    (dirs / "swapped.qcow2").symlink_to("/etc/passwd")
    with pytest.raises(ValidationFailed, match="cannot be opened"):
        imports.copy_host_file(str(dirs / "swapped.qcow2"), str(work))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "disk.qcow2").write_bytes(source.read_bytes())
    (dirs / "sub").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValidationFailed, match="changed while it was opened"):
        imports.copy_host_file(str(dirs / "sub" / "disk.qcow2"), str(work))
    assert list(work.iterdir()) == []


def test_open_uploads_count_together_against_the_quota_and_are_capped(transactional_db, test_host, alice,
                                                                       admin_user, client_for, dirs, tmp_path,
                                                                       settings):
    client = client_for(alice)
    assert tus_create(client, 12 * GIB).status_code == 201  # alice may use 20 GiB
    second = tus_create(client, 12 * GIB)
    assert second.status_code == 403 and second.json()["code"] == "quota_exceeded"
    assert tus_create(client, 7 * GIB).status_code == 201
    settings.UPLOADS_PER_USER = 3
    assert tus_create(client, 10).status_code == 201
    capped = tus_create(client, 10)
    assert capped.status_code == 409 and "at most 3 at once" in capped.json()["detail"]
    url = client.get("/api/uploads/").json()[0]["url"]
    assert tus(client, "delete", url).status_code == 204
    assert tus_create(client, 10).status_code == 201  # a cancelled upload is no longer open
    # An administrator's uploads (for the library) have no quota, only the cap.
    admin = client_for(admin_user)
    for _ in range(3):
        assert tus_create(admin, 50 * GIB).status_code == 201
    assert tus_create(admin, 10).status_code == 409
    # Import jobs queued or running per user are capped too.
    settings.IMAGE_IMPORTS_PER_USER = 1
    data = make_source("qcow2", tmp_path, tmp_path / "d.qcow2").read_bytes()
    Upload.objects.filter(owner=alice).delete()
    upload = _complete_upload(client, data)
    Job.objects.create(kind="image.import", actor=alice, via="api", params={"name": "other"}, status="running")
    busy = import_api(client, source="upload", upload=upload, name="second")
    assert busy.status_code == 409 and "at most 1 at once" in busy.json()["detail"]
    assert Upload.objects.get(pk=upload).status == "complete"


def test_any_failure_of_an_import_job_cleans_up(transactional_db, test_host, alice, client_for, dirs, driver,
                                                tmp_path, monkeypatch):
    from storage import imports
    from storage.jobs import _import_abandoned
    from storage.services import image_volume_name, pool_ensure

    client = client_for(alice)
    data = make_source("qcow2", tmp_path, tmp_path / "d.qcow2").read_bytes()

    def bug(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(imports, "_register", bug)  # after the volume was written
    upload = _complete_upload(client, data)
    job = job_of(import_api(client, source="upload", upload=upload, name="buggy"))
    job.refresh_from_db()
    assert job.status == "errored" and job.error == "Internal error: RuntimeError"
    assert Upload.objects.get(pk=upload).status == "cancelled"
    assert pool_volumes(driver, "buggy") == [] and staging_files() == []
    assert len(job.params["volumes"]) == 1  # what the job's clean-up would remove had the worker died
    # A worker that died mid-copy: the job's clean-up removes the volumes it recorded, never one a row names.
    pool = pool_ensure(host=test_host)
    orphan = image_volume_name("dead-0badf00d")
    driver.create_volume(pool=pool.name, name=orphan, capacity_bytes=MIB, fmt="qcow2")
    named = Image.objects.get(name="test-blank").volume_name
    upload = _complete_upload(client, data)
    Upload.objects.filter(pk=upload).update(status="importing")
    dead = Job.objects.create(kind="image.import", actor=alice, via="api", status="failed",
                              params={"name": "dead", "upload_id": upload,
                                      "volumes": [[pool.pk, orphan], [pool.pk, named]]})
    _import_abandoned(dead, "The worker stopped")
    names = {v.name for v in driver.list_volumes(pool=pool.name)}
    assert orphan not in names and named in names
    assert Upload.objects.get(pk=upload).status == "cancelled"
