"""Glance images: list a cloud's images, import them into the portal, publish portal images to Glance.

Import: `glance_import` checks the Glance image (active, a disk and container format the portal takes,
within the size limit) and queues the storage pipeline's `image.import` job with the "glance" import
source (registered in storage.imports by clouds.apps): the job streams the bytes from Glance into the
staging directory, hashing them with Glance's os_hash_algo and comparing with its os_hash_value (a
mismatch fails the import, nothing kept), then the pipeline detects, checks, converts, stores (into the
storage domain chosen) and registers the image like any other import; the GlanceImport link is written
in the same transaction. Re-importing the same Glance image (same os_hash_value) returns the portal
image already made, or the import job still running.

Publish: `glance_publish` queues a `glance.publish` job that creates the Glance image (disk format from
the portal image, container bare, min_disk, min_ram, os_type/os_distro), streams the stored file into it
while computing its SHA-512, and compares that with the os_hash_value Glance computed. A mismatch, a
failure or a cancel deletes the half-made Glance image.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction

from portal.actors import Actor, require_admin
from portal.audit import audit
from portal.choices import JobStatus
from portal.exceptions import Conflict, NotFound, PortalError, ValidationFailed
from portal.jobs import JobContext, job_create, job_handler
from portal.models import Job
from storage.imports import IMAGE_IMPORT, ImportSource, image_import
from storage.models import Image
from storage.pools import uri_is_this_machine

from .connection import cloud_call, connect
from .models import Cloud, GlanceImport, GlancePublication

log = logging.getLogger(__name__)

SOURCE = "glance"  # the storage import source
GLANCE_PUBLISH = "glance.publish"  # the job kind
CHUNK = 1024 * 1024
# Glance disk formats the portal imports (storage.imageio.FORMATS), and what the pipeline is told it is.
DISK_FORMATS = {"qcow2": "qcow2", "raw": "raw", "vmdk": "vmdk", "vdi": "vdi", "vhdx": "vhdx", "iso": "iso"}
CONTAINER_FORMATS = ("bare", "ova")
HASH_ALGOS = ("sha256", "sha384", "sha512", "sha3_256", "sha3_512", "blake2b", "md5")
GLANCE_VISIBILITY = ("private", "shared", "community", "public")
NAME_CLEAN = re.compile(r"[^a-z0-9-]+")


def _attr(img: Any, key: str) -> Any:
    value = getattr(img, key, None)
    if value is None:
        value = (getattr(img, "properties", None) or {}).get(key)
    return value


def cloud_find(*, actor: Actor, key: object) -> Cloud:
    """A cloud by numeric id or name (administrators only: clouds are the back-office's)."""
    require_admin(actor, "Only administrators use the portal's clouds.")
    text = str(key or "").strip()[:64]
    cloud = (Cloud.objects.filter(pk=int(text)).first() if text.isascii() and text.isdigit() and len(text) <= 18
             else Cloud.objects.filter(name=text).first())
    if cloud is None:
        raise NotFound(f"Cloud {text!r} not found.")
    return cloud


def _describe(img: Any) -> dict[str, Any]:
    return {
        "id": img.id, "name": img.name or "", "status": img.status,
        "disk_format": img.disk_format or "", "container_format": img.container_format or "",
        "size": img.size, "virtual_size": img.virtual_size, "checksum": img.checksum or "",
        "os_hash_algo": img.hash_algo or "", "os_hash_value": img.hash_value or "",
        "visibility": img.visibility or "", "min_disk": img.min_disk or 0, "min_ram": img.min_ram or 0,
        "os_type": _attr(img, "os_type") or "", "os_distro": _attr(img, "os_distro") or "",
        "description": str(_attr(img, "description") or ""),
        "created_at": img.created_at or "", "updated_at": img.updated_at or "",
    }


def _imported(cloud: Cloud) -> dict[str, GlanceImport]:
    links = GlanceImport.objects.filter(cloud=cloud, image__isnull=False).select_related("image")
    out: dict[str, GlanceImport] = {}
    for link in links.order_by("created_at"):
        out[link.glance_id] = link
    return out


def glance_images(*, actor: Actor, cloud: Cloud) -> list[dict[str, Any]]:
    """The cloud's Glance images with their properties, and which portal image each was imported as."""
    require_admin(actor, "Only administrators browse a cloud's images.")
    conn = connect(cloud, "image")
    with cloud_call(cloud, "list its Glance images"):
        images = [_describe(img) for img in conn.image.images()]
    links = _imported(cloud)
    for row in images:
        link = links.get(row["id"])
        row["imported_as"] = ({"id": link.image.pk, "name": link.image.name}
                              if link is not None and link.image is not None else None)
        try:
            _check_importable(row)
            row["importable"], row["refused_because"] = True, ""
        except ValidationFailed as exc:
            row["importable"], row["refused_because"] = False, exc.message
    return sorted(images, key=lambda r: (r["name"], r["id"]))


def _glance_image(cloud: Cloud, glance_id: str, conn: Any = None) -> dict[str, Any]:
    text = str(glance_id or "").strip()
    if not text or len(text) > 64 or not re.fullmatch(r"[A-Za-z0-9-]+", text):
        raise ValidationFailed("Give the id of a Glance image.", field="glance_id")
    conn = conn or connect(cloud, "image")
    with cloud_call(cloud, f"read Glance image {text}"):
        return _describe(conn.image.get_image(text))


def _check_importable(row: dict[str, Any]) -> str:
    """The format the pipeline is told the Glance image is in; a clear refusal otherwise."""
    name = row["name"] or row["id"]
    if row["status"] != "active":
        raise ValidationFailed(f"Glance image {name} is {row['status']}, not active: only active images can be "
                               "imported.", field="glance_id")
    container = row["container_format"] or "bare"
    disk = row["disk_format"] or ""
    if container not in CONTAINER_FORMATS:
        raise ValidationFailed(f"Glance image {name} has container format {container!r}, which the portal does not "
                               f"import (it takes {', '.join(CONTAINER_FORMATS)}).", field="container_format")
    if container == "ova":
        return "ova"
    if disk not in DISK_FORMATS:
        raise ValidationFailed(f"Glance image {name} has disk format {disk!r}, which the portal does not import "
                               f"(it takes {', '.join(DISK_FORMATS)}).", field="disk_format")
    size = int(row["size"] or 0)
    if size > settings.IMAGE_MAX_BYTES:
        raise ValidationFailed(f"Glance image {name} is {size} bytes; the portal imports at most "
                               f"{settings.IMAGE_MAX_BYTES} bytes.", field="glance_id")
    algo = (row["os_hash_algo"] or "").lower()
    if row["os_hash_value"] and algo not in HASH_ALGOS:
        raise ValidationFailed(f"Glance image {name} is hashed with {algo!r}, which the portal cannot check.",
                               field="glance_id")
    if not row["os_hash_value"] and not row["checksum"]:
        raise ValidationFailed(f"Glance image {name} has no checksum to verify its bytes with.", field="glance_id")
    return DISK_FORMATS[disk]


def portal_name(glance_name: str, glance_id: str) -> str:
    """A portal image name made from a Glance name: lowercase letters, digits and hyphens, 2–60."""
    text = NAME_CLEAN.sub("-", (glance_name or "").lower()).strip("-")[:60].strip("-")
    return text if len(text) >= 2 else f"glance-{glance_id[:8].lower()}"


# --- the storage import source ---------------------------------------------------------------------

def _source_check(actor: Actor, params: dict[str, Any]) -> dict[str, Any]:
    """Record phase: the cloud and the Glance image as Glance describes it now (never as the caller says)."""
    cloud = Cloud.objects.filter(pk=params.get("cloud_id")).first()
    if cloud is None:
        raise NotFound("No such cloud.")
    row = _glance_image(cloud, str(params.get("glance_id") or ""))
    fmt = _check_importable(row)
    return {"cloud_id": cloud.pk, "cloud": cloud.name, "glance_id": row["id"], "glance_name": row["name"],
            "os_hash_algo": (row["os_hash_algo"] or ("md5" if row["checksum"] else "")).lower(),
            "os_hash_value": (row["os_hash_value"] or row["checksum"]).lower(), "size": int(row["size"] or 0),
            "format": fmt, "where": f"glance:{cloud.name}/{row['id']}"}


def _source_fetch(params: dict[str, Any], dest: str, progress: Any, limit: int) -> None:
    """The job: stream the Glance image into `dest`, hashing it; the hash must be Glance's."""
    cloud = Cloud.objects.filter(pk=params.get("cloud_id")).first()
    if cloud is None:
        raise NotFound("The cloud the image comes from was removed; nothing was imported.")
    fetch_to_file(cloud, params["glance_id"], dest, algo=params["os_hash_algo"], expected=params["os_hash_value"],
                  size=int(params.get("size") or 0), limit=limit, progress=progress)


def fetch_to_file(cloud: Cloud, glance_id: str, dest: str, *, algo: str, expected: str, size: int, limit: int,
                  progress: Any = None) -> int:
    """Stream a Glance image's bytes into `dest` (created; never held in memory) and check their hash
    with `algo` against `expected`. Returns the bytes written; raises ValidationFailed on a mismatch."""
    digest = hashlib.new(algo)
    received = 0
    conn = connect(cloud, "image")
    with cloud_call(cloud, f"download Glance image {glance_id}"):
        response = conn.image.download_image(glance_id, stream=True, chunk_size=CHUNK)
        try:
            with open(dest, "xb") as out:
                for piece in response.iter_content(chunk_size=CHUNK):
                    received += len(piece)
                    if received > limit:
                        raise ValidationFailed(f"Glance image {glance_id} is larger than the {limit} bytes allowed; "
                                               "nothing was imported.", field="glance_id")
                    out.write(piece)
                    digest.update(piece)
                    if progress is not None and size:
                        progress(received * 100 / size)
        finally:
            response.close()
    if size and received != size:
        raise ValidationFailed(f"The download of Glance image {glance_id} ended after {received} of its {size} "
                               "bytes; nothing was imported.", field="glance_id")
    got = digest.hexdigest()
    if got != expected:
        raise ValidationFailed(f"The bytes of Glance image {glance_id} do not match its checksum: their {algo} is "
                               f"{got[:16]}…, Glance's os_hash_value is {expected[:16]}…; nothing was imported.",
                               field="glance_id")
    return received


def _source_registered(images: list[Image], params: dict[str, Any], job: Job) -> None:
    GlanceImport.objects.create(cloud_id=params["cloud_id"], glance_id=params["glance_id"],
                                glance_name=params.get("glance_name", "")[:255],
                                os_hash_algo=params.get("os_hash_algo", "")[:16],
                                os_hash_value=params.get("os_hash_value", "")[:128], image=images[0], job=job)


GLANCE_SOURCE = ImportSource(check=_source_check, fetch=_source_fetch, registered=_source_registered,
                             admin_only=True, label="Glance")


# --- import -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImportResult:
    """A new import job, or (re-import) the portal image made already or the job still importing it."""

    job: Job | None
    image: Image | None
    created: bool


def _running_import(cloud: Cloud, glance_id: str) -> Job | None:
    return (Job.objects.filter(kind=IMAGE_IMPORT, status__in=JobStatus.ACTIVE, params__source=SOURCE,
                               params__source_params__cloud_id=cloud.pk,
                               params__source_params__glance_id=glance_id).order_by("created_at").first())


def glance_import(*, actor: Actor, via: str, cloud: Cloud, glance_id: str, name: str | None = None,
                  title: str = "", storage_domain: str | None = None, visibility: str | None = None,
                  host: Any = None, kind: str | None = None, owner: Any = None) -> ImportResult:
    """Import a Glance image into the portal (administrators): a new `image.import` job, or the image or
    job a former import of the same bytes made."""
    require_admin(actor, "Only administrators import images from a cloud.")
    row = _glance_image(cloud, glance_id)
    fmt = _check_importable(row)
    hash_value = (row["os_hash_value"] or row["checksum"]).lower()
    with transaction.atomic():
        Cloud.objects.select_for_update().filter(pk=cloud.pk).first()  # two re-imports at once take turns
        done = (GlanceImport.objects.filter(cloud=cloud, glance_id=row["id"], os_hash_value=hash_value,
                                            image__isnull=False).select_related("image").first())
        if done is not None and done.image is not None:
            return ImportResult(job=None, image=done.image, created=False)
        running = _running_import(cloud, row["id"])
        if running is not None:
            return ImportResult(job=running, image=None, created=False)
        description = row["description"] or f"Imported from Glance image {row['name'] or row['id']} of cloud {cloud.name}."
        job = image_import(
            actor=actor, via=via, source=SOURCE, source_params={"cloud_id": cloud.pk, "glance_id": row["id"]},
            name=name or portal_name(row["name"], row["id"]), title=title or (row["name"] or "")[:100],
            fmt=fmt, kind=kind or ("iso" if fmt == "iso" else None), visibility=visibility, host=host, owner=owner,
            description=description[:2000], os_name=(row["os_distro"] or row["os_type"] or "")[:100],
            min_disk_gib=max(1, int(row["min_disk"] or 0)), storage_domain=storage_domain,
            default_memory_mib=int(row["min_ram"]) if row["min_ram"] else None)
        audit(actor=actor, via=via, action="glance.import", target_type="cloud", target_name=cloud.name, job=job,
              message=f"Queued the import of Glance image {row['name'] or row['id']} ({row['id']}) from cloud "
                      f"{cloud.name}")
    return ImportResult(job=job, image=None, created=True)


# --- publish ----------------------------------------------------------------------------------------

def _disk_format(image: Image) -> str:
    if image.kind == Image.Kind.ISO:
        return "iso"
    if image.format in ("qcow2", "raw"):
        return image.format
    raise ValidationFailed(f"Image {image.name} is stored as {image.format}, which is not published.", field="image")


def _local_file(image: Image) -> str:
    """The image's stored file, read on this machine: publishing reads it directly."""
    host = image.pool.host
    if not uri_is_this_machine(host.uri):
        raise Conflict(f"Image {image.name} is stored on host {host.name}, not on the portal server; publishing "
                       "reads the stored file, so only images on this machine's hosts can be published.")
    if not image.path or not os.path.isfile(image.path):
        raise Conflict(f"The stored file of image {image.name} is missing ({image.path or 'no path'}).")
    return image.path


def _os_properties(image: Image) -> dict[str, str]:
    text = (image.os_name or "").strip()
    if not text:
        return {}
    distro = NAME_CLEAN.sub("", text.split()[0].lower())
    return {"os_type": "windows" if "windows" in text.lower() else "linux", "os_distro": distro or text[:50]}


def glance_publish(*, actor: Actor, via: str, cloud: Cloud, image: Image, name: str | None = None,
                   visibility: str = "private") -> Job:
    """Queue the publication of a portal image or template to the cloud's Glance (administrators)."""
    require_admin(actor, "Only administrators publish images to a cloud.")
    glance_name = (name or image.name).strip()
    if not glance_name or len(glance_name) > 255:
        raise ValidationFailed("The Glance image name must be 1–255 characters.", field="name")
    if visibility not in GLANCE_VISIBILITY:
        raise ValidationFailed(f"Visibility must be one of {', '.join(GLANCE_VISIBILITY)}.", field="visibility")
    _disk_format(image)
    _local_file(image)
    with transaction.atomic():
        Image.objects.select_for_update().filter(pk=image.pk).first()
        busy = Job.objects.filter(kind=GLANCE_PUBLISH, status__in=JobStatus.ACTIVE, params__cloud_id=cloud.pk,
                                  params__image_id=image.pk).exists()
        if busy:
            raise Conflict(f"Image {image.name} is being published to cloud {cloud.name} already.")
        pub = GlancePublication.objects.create(cloud=cloud, image=image, image_name=image.name)
        job = job_create(kind=GLANCE_PUBLISH, actor=actor, via=via, target=image, max_attempts=1,
                         params={"cloud_id": cloud.pk, "image_id": image.pk, "publication_id": pub.pk,
                                 "name": glance_name, "visibility": visibility})
        GlancePublication.objects.filter(pk=pub.pk).update(job=job)
        audit(actor=actor, via=via, action=GLANCE_PUBLISH, target=image, job=job,
              message=f"Queued the publication of image {image.name} to cloud {cloud.name} as {glance_name!r}")
    return job


class _HashingReader:
    """A file read by the upload: hashes what is sent and reports progress (0–100)."""

    def __init__(self, path: str, progress: Any) -> None:
        self.fh = open(path, "rb")  # noqa: SIM115 (closed by the publisher)
        self.size = os.fstat(self.fh.fileno()).st_size
        self.sha512 = hashlib.sha512()
        self.sent = 0
        self.progress = progress

    def __len__(self) -> int:
        return self.size

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(CHUNK if n is None or n < 0 else max(n, 64 * 1024))
        if data:
            self.sha512.update(data)
            self.sent += len(data)
            self.progress(self.sent, self.size)
        return data

    def close(self) -> None:
        self.fh.close()


def _file_digest(path: str, algo: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algo).hexdigest()


def _delete_glance_image(cloud: Cloud, glance_id: str) -> None:
    try:
        conn = connect(cloud, "image")
        with cloud_call(cloud, f"delete Glance image {glance_id}"):
            conn.image.delete_image(glance_id, ignore_missing=True)
    except PortalError as exc:
        log.warning("could not delete half-published Glance image %s: %s", glance_id, exc.message)
    except Exception:
        log.exception("could not delete half-published Glance image %s", glance_id)


def _publication_failed(job: Job, error: str) -> None:
    """A publish job that failed or was lost: its Glance image goes, its publication says failed."""
    pub = GlancePublication.objects.filter(pk=job.params.get("publication_id")).select_related("cloud").first()
    if pub is None or pub.status == GlancePublication.Status.ACTIVE:
        return
    if pub.glance_id:
        _delete_glance_image(pub.cloud, pub.glance_id)
    GlancePublication.objects.filter(pk=pub.pk).update(status=GlancePublication.Status.FAILED)


@job_handler(GLANCE_PUBLISH, on_failure=_publication_failed)
def glance_publish_run(ctx: JobContext) -> dict[str, Any]:
    from openstack import (
        exceptions as sdk_exceptions,  # lazily, like openstacksdk in clouds.connection.connect
    )
    from openstack.image.v2 import image as glance_image

    params = ctx.params
    pub = GlancePublication.objects.filter(pk=params["publication_id"]).select_related("cloud").first()
    image = Image.objects.filter(pk=params["image_id"]).select_related("pool__host").first()
    if pub is None or image is None:
        raise NotFound("The image or its publication is gone; nothing was published.")
    cloud = pub.cloud
    path = _local_file(image)
    disk_format = _disk_format(image)
    ctx.progress(1, f"Creating the Glance image in cloud {cloud.name}")
    conn = connect(cloud, "image")
    attrs: dict[str, Any] = {"name": params["name"], "disk_format": disk_format, "container_format": "bare",
                             "visibility": params["visibility"], "min_disk": max(1, int(image.min_disk_gib or 1)),
                             "min_ram": int(image.default_memory_mib or 0), **_os_properties(image),
                             "portal_image": image.name}
    glance_id = ""
    done = False
    reader: _HashingReader | None = None
    last = [-1]

    def sent(count: int, total: int) -> None:
        percent = 2 + int(93 * count / total) if total else 95
        if percent != last[0]:
            last[0] = percent
            ctx.progress(percent, f"Uploading {image.name} to Glance")

    try:
        with cloud_call(cloud, "create a Glance image"):
            created = conn.image._create(glance_image.Image, **attrs)
        glance_id = created.id
        GlancePublication.objects.filter(pk=pub.pk).update(glance_id=glance_id)
        pub.glance_id = glance_id
        reader = _HashingReader(path, sent)
        with cloud_call(cloud, f"upload the bytes of Glance image {glance_id}"):
            response = created.upload(conn.image, data=reader, size=reader.size)
            sdk_exceptions.raise_from_response(response)
        ctx.progress(96, "Checking the checksum Glance computed")
        with cloud_call(cloud, f"read Glance image {glance_id}"):
            after = conn.image.get_image(glance_id)
        algo, value = (after.hash_algo or "").lower(), (after.hash_value or "").lower()
        ours = reader.sha512.hexdigest()
        if algo and algo != "sha512":
            ours = _file_digest(path, algo) if algo in HASH_ALGOS else ""
        if after.status != "active" or not value or value != ours:
            raise ValidationFailed(f"Glance's checksum of the published image ({algo} {value[:16] or 'none'}…) is not "
                                   f"that of the bytes sent ({ours[:16]}…); the Glance image was deleted.",
                                   field="image")
        GlancePublication.objects.filter(pk=pub.pk).update(status=GlancePublication.Status.ACTIVE,
                                                           os_hash_value=value)
        audit(actor=ctx.job.actor, via=ctx.job.via, action=GLANCE_PUBLISH, target=image, job=ctx.job,
              message=f"Published image {image.name} to cloud {cloud.name} as Glance image {glance_id} "
                      f"({reader.sent} bytes, {disk_format})")
        done = True
    finally:
        if reader is not None:
            reader.close()
        if not done:
            if glance_id:
                _delete_glance_image(cloud, glance_id)
            GlancePublication.objects.filter(pk=pub.pk).update(status=GlancePublication.Status.FAILED)
    return {"glance_id": glance_id, "cloud": cloud.name, "disk_format": disk_format, "size_bytes": reader.sent,
            "os_hash_algo": "sha512", "os_hash_value": value}
