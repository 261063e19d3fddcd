"""Resumable uploads (the tus 1.0.0 protocol's model): bytes arrive in chunks into a staging file on
the portal server, at exactly the offset received so far, and an image import takes the finished file.

Rules kept here for every door: a user sees only their own uploads; an upload larger than
IMAGE_MAX_BYTES or than the user's remaining disk quota is refused when it is announced; one
request writes to an upload at a time (an exclusive lock on its staging file while the bytes
stream, the row locked while the offset is recorded), so two PATCHes at once cannot interleave;
a request body is streamed to disk in pieces, never held in memory; idle uploads expire after
UPLOAD_EXPIRY_SECONDS and `uploads_expire` (run by the monitor's housekeeping) removes them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, BinaryIO

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from portal.actors import Actor, is_admin, is_signed_in, require_user
from portal.audit import audit
from portal.exceptions import Conflict, NotFound, PortalError, QuotaExceeded, ValidationFailed
from quotas.models import Quota
from quotas.selectors import quota_usage
from quotas.services import quota_get_or_create

from .models import Upload

log = logging.getLogger(__name__)

GIB = 1024**3
CHUNK = 1024 * 1024  # bytes read from a request body at a time
FILENAME_MAX = 255
METADATA_MAX_BYTES = 4096


class UploadTooLarge(PortalError):
    """More bytes than the portal accepts for one image (HTTP 413)."""

    code = "too_large"
    http_status = 413
    exit_code = 2


def staging_dir() -> str:
    """Where upload staging files live (created on first use, private to the portal's user)."""
    path = os.path.join(settings.IMAGE_STAGING_DIR, "uploads")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def upload_path(upload: Upload) -> str:
    """The staging file of an upload (named by its id, never by anything the client sent)."""
    return os.path.join(staging_dir(), str(upload.pk))


def _expiry() -> Any:
    return timezone.now() + timedelta(seconds=settings.UPLOAD_EXPIRY_SECONDS)


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def check_image_size(*, owner: Actor, size: int) -> None:
    """An image of `size` bytes is within IMAGE_MAX_BYTES and, when it goes to a user's space (`owner`;
    None: the library), their remaining disk quota. An announced size: the import charges the real
    virtual size under the quota lock."""
    if size > settings.IMAGE_MAX_BYTES:
        raise UploadTooLarge(f"The image is too large: {_human(size)}; the portal accepts images of at most "
                             f"{_human(settings.IMAGE_MAX_BYTES)}.", limit=settings.IMAGE_MAX_BYTES)
    if owner is None:
        return
    disk = next(u for u in quota_usage(user=owner) if u.resource == "disk_gib")
    needed = -(-size // GIB)
    if needed > disk.remaining:
        raise QuotaExceeded(resource=disk.label, requested=needed, limit=disk.limit, in_use=disk.used, unit=disk.unit,
                            requested_resources={"vms": 0, "vcpus": 0, "memory_mib": 0, "disk_gib": needed})


OPEN = (Upload.Status.RECEIVING, Upload.Status.COMPLETE, Upload.Status.IMPORTING)


def _check_open_uploads(user: Any, size: int, *, quota: bool) -> None:
    """Under the user's quota row lock (two creations at once count each other): at most
    UPLOADS_PER_USER uploads open (receiving, complete or being imported), and, for a user's own space
    (`quota`), the lengths of the open ones and this new one together within the remaining disk quota.
    (An administrator's uploads go to the library: their user row is locked instead.)"""
    if quota:
        quota_get_or_create(user=user)
        Quota.objects.select_for_update().filter(user=user).first()
    else:
        type(user).objects.select_for_update().filter(pk=user.pk).first()
    open_uploads = Upload.objects.filter(owner=user, status__in=OPEN)
    count = open_uploads.count()
    if count >= settings.UPLOADS_PER_USER:
        raise Conflict(f"You have {count} uploads open; at most {settings.UPLOADS_PER_USER} at once. Finish, import "
                       "or cancel one first.")
    if not quota:
        return
    pending = sum(open_uploads.values_list("length", flat=True))
    disk = next(u for u in quota_usage(user=user) if u.resource == "disk_gib")
    needed = -(-(pending + size) // GIB)
    if needed > disk.remaining:
        raise QuotaExceeded(resource=disk.label, requested=needed, limit=disk.limit, in_use=disk.used, unit=disk.unit,
                            requested_resources={"vms": 0, "vcpus": 0, "memory_mib": 0, "disk_gib": needed})


def _clean_metadata(metadata: dict[str, str]) -> dict[str, str]:
    if sum(len(k) + len(v) for k, v in metadata.items()) > METADATA_MAX_BYTES:
        raise ValidationFailed(f"Upload metadata is too long (at most {METADATA_MAX_BYTES} bytes).",
                               field="metadata")
    for key, value in metadata.items():
        if any(ord(c) < 32 for c in key + value):
            raise ValidationFailed("Upload metadata contains control characters.", field="metadata")
    return dict(metadata)


def _clean_filename(name: str) -> str:
    # Only the last path component, for display; the staging file is named by the upload's id.
    name = os.path.basename(name.replace("\\", "/")).strip()
    return name[:FILENAME_MAX]


def upload_create(*, actor: Actor, via: str, length: object, metadata: dict[str, str] | None = None) -> Upload:
    """Announce an upload of `length` bytes: refused beyond IMAGE_MAX_BYTES or the user's remaining disk
    quota; an empty staging file is made for it."""
    user = require_user(actor, "Sign in to upload images.")
    try:
        size = int(str(length))
    except ValueError:
        raise ValidationFailed("Upload-Length must be a whole number of bytes.", field="length") from None
    if size <= 0:
        raise ValidationFailed("An upload must announce its length, more than 0 bytes.", field="length")
    # An administrator's upload may go to the library; a user's goes to their own space.
    admin = is_admin(user)
    check_image_size(owner=None if admin else user, size=size)
    meta = _clean_metadata(metadata or {})
    filename = _clean_filename(meta.get("filename") or meta.get("name") or "")
    upload = Upload(owner=user, filename=filename, length=size, metadata=meta, expires_at=_expiry())
    with open(upload_path(upload), "xb"):
        pass
    try:
        with transaction.atomic():
            _check_open_uploads(user, size, quota=not admin)
            upload.save(force_insert=True)
            audit(actor=user, via=via, action="upload.create", target_type="upload", target_id=str(upload.pk),
                  target_name=filename or str(upload.pk), message=f"Started an upload of {size} bytes")
    except BaseException:
        _remove(upload_path(upload))
        raise
    return upload


def upload_list(*, user: Actor) -> Any:
    """The uploads `user` started (everyone sees only their own, administrators included)."""
    if not is_signed_in(user):
        return Upload.objects.none()
    return Upload.objects.filter(owner=user)


def upload_get(*, user: Actor, upload_id: object) -> Upload:
    """One of the user's own uploads; anyone else's is indistinguishable from a missing one."""
    try:
        key = uuid.UUID(str(upload_id))
    except ValueError:
        raise NotFound("Upload not found.") from None
    upload = upload_list(user=user).filter(pk=key).first()
    if upload is None:
        raise NotFound("Upload not found.")
    return upload


def _read_into(fh: BinaryIO, stream: Any, limit: int, progress: Callable[[int], None] | None = None) -> int:
    """Copy at most `limit` bytes from `stream` to `fh` in pieces; returns how many were written. A body
    that ends early (a dropped connection) keeps what arrived."""
    written = 0
    while written < limit:
        try:
            piece = stream.read(min(CHUNK, limit - written))
        except OSError:  # the client went away mid-body: keep what arrived, the client resumes
            break
        if not piece:
            break
        fh.write(piece)
        written += len(piece)
        if progress is not None:
            progress(written)
    return written


def upload_append(*, actor: Actor, upload: Upload, offset: object, stream: Any,
                  content_length: int | None = None) -> Upload:
    """Append a request body at `offset`, which must be exactly the bytes received so far (else Conflict,
    and the client asks for the offset again). Bytes beyond the announced length are refused; a body
    that breaks off keeps what arrived, so the client resumes from the new offset."""
    user = require_user(actor, "Sign in to upload images.")
    if upload.owner_id != user.pk:
        raise NotFound("Upload not found.")
    try:
        at = int(str(offset))
    except ValueError:
        raise ValidationFailed("Upload-Offset must be a whole number of bytes.", field="offset") from None
    path = upload_path(upload)
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        raise Conflict("This upload's data is gone (it expired or was cancelled); start a new upload.") from None
    with os.fdopen(fd, "r+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict("Another request is writing to this upload right now; wait for it, then ask "
                           "for the offset again.") from None
        upload.refresh_from_db()
        if upload.status != Upload.Status.RECEIVING:
            raise Conflict(f"This upload is {upload.get_status_display().lower()}; it takes no more data.",
                           status=upload.status)
        if at != upload.offset:
            raise Conflict(f"Upload-Offset {at} does not match the {upload.offset} bytes received so far.",
                           offset=upload.offset)
        remaining = upload.length - upload.offset
        if content_length is not None and content_length > remaining:
            raise UploadTooLarge(f"The request carries {content_length} bytes but only {remaining} of the "
                                 f"announced {upload.length} remain.", limit=upload.length)
        # Anything past the recorded offset is from a write that broke off before it was recorded.
        fh.truncate(upload.offset)
        fh.seek(upload.offset)
        written = _read_into(fh, stream, remaining)
        extra = stream.read(1) if written == remaining and content_length is None else b""
        fh.flush()
        os.fsync(fh.fileno())
        if extra:
            fh.truncate(upload.offset)
            raise UploadTooLarge(f"The request carries more than the {remaining} bytes that remain of the "
                                 f"announced {upload.length}.", limit=upload.length)
        with transaction.atomic():
            row = Upload.objects.select_for_update().get(pk=upload.pk)
            if row.offset != upload.offset or row.status != Upload.Status.RECEIVING:  # (cancelled meanwhile)
                raise Conflict("The upload changed while this request wrote to it; ask for the offset again.")
            row.offset = upload.offset + written
            if row.offset == row.length:
                row.status = Upload.Status.COMPLETE
            row.expires_at = _expiry()
            row.save(update_fields=["offset", "status", "expires_at", "updated_at"])
    return row


def upload_cancel(*, actor: Actor, via: str, upload: Upload) -> None:
    """Cancel an upload and remove its bytes (refused while an import is reading it)."""
    user = require_user(actor, "Sign in to cancel uploads.")
    if upload.owner_id != user.pk:
        raise NotFound("Upload not found.")
    with transaction.atomic():
        row = Upload.objects.select_for_update().get(pk=upload.pk)
        if row.status == Upload.Status.IMPORTING:
            raise Conflict("This upload is being imported; cancel the import job instead.")
        row.status = Upload.Status.CANCELLED
        row.save(update_fields=["status", "updated_at"])
        audit(actor=user, via=via, action="upload.cancel", target_type="upload", target_id=str(row.pk),
              target_name=row.filename or str(row.pk), message=f"Cancelled the upload at {row.offset} bytes")
    _remove(upload_path(row))


def upload_claim(*, actor: Actor, upload_id: object) -> Upload:
    """Lock a complete upload for an import (called inside the import's record transaction): the
    user's own, all bytes received, not imported or importing already."""
    upload = upload_get(user=actor, upload_id=upload_id)
    row = Upload.objects.select_for_update().get(pk=upload.pk)
    if row.status == Upload.Status.RECEIVING:
        raise ValidationFailed(f"The upload is incomplete: {row.offset} of {row.length} bytes received; "
                               "finish it first.", field="upload")
    if row.status != Upload.Status.COMPLETE:
        raise ValidationFailed(f"The upload is {row.get_status_display().lower()}; upload the file again.",
                               field="upload")
    if not os.path.isfile(upload_path(row)) or os.path.getsize(upload_path(row)) != row.length:
        raise ValidationFailed("The upload's data is incomplete on the server; upload the file again.",
                               field="upload")
    row.status = Upload.Status.IMPORTING
    row.save(update_fields=["status", "updated_at"])
    return row


def upload_finish(*, upload_id: object, imported: bool) -> None:
    """After its import: the staging file is removed either way; the row says imported or cancelled
    (a failed import needs the file uploaded again)."""
    row = Upload.objects.filter(pk=str(upload_id)).first()
    if row is None:
        return
    _remove(upload_path(row))
    Upload.objects.filter(pk=row.pk).update(
        status=Upload.Status.DONE if imported else Upload.Status.CANCELLED, updated_at=timezone.now())


def uploads_expire() -> int:
    """Remove uploads idle past their expiry (their rows and staging files), and staging files no
    upload owns; uploads being imported are left to their job. Returns how many were removed."""
    now = timezone.now()
    removed = 0
    for upload in Upload.objects.filter(expires_at__lt=now).exclude(status=Upload.Status.IMPORTING):
        _remove(upload_path(upload))
        upload.delete()
        removed += 1
    directory = staging_dir()
    known = {str(pk) for pk in Upload.objects.values_list("pk", flat=True)}
    cutoff = now.timestamp() - settings.UPLOAD_EXPIRY_SECONDS
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        try:
            if name not in known and os.path.getmtime(path) < cutoff:
                _remove(path)
                removed += 1
        except OSError:
            continue
    if removed:
        log.info("removed %d expired upload(s)", removed)
    return removed


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:  # pragma: no cover - reported, not fatal
        log.warning("cannot remove staging file %s: %s", path, exc)
