"""Images on several hosts: an image's base volume, and its kernel and initrd, copied into another
host's portal pool through libvirt's volume API (streams), once per image and pool.

An image lives in one pool on one host (`Image.pool`). A VM on another host is built on the image's
copy there (`ImageCopy`): its thin overlay is backed by the copy, a full copy is cloned from it, a
direct-kernel VM boots the copy's kernel and initrd, an ISO goes into the CD-ROM drive from it. On the
image's own host the "copy" is the image itself: no row is written, and `image_copy_ensure` returns an
unsaved ImageCopy naming the image's own volume and files, so callers treat every host alike.

Each copy is made once: the first ensure claims the row (a token and a time it keeps renewing while
bytes flow) and copies outside any transaction; a concurrent ensure for the same image and pool waits
for that copy instead of making another. A claim not renewed for `CLAIM_STALE` is a dead copier's: the
next ensure deletes its half copy and copies again. The row's `path` is written only when everything is
there, and is what says so (the discipline of volume_materialize).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from cluster.models import Host
from portal.audit import audit
from portal.choices import Via
from portal.exceptions import Conflict, NotFound, PortalError
from portal.hypervisor import get_driver

from .models import Image, ImageCopy, StoragePool
from .pools import pool_for_host

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (bytes copied, bytes in all)

CLAIM_STALE = timedelta(seconds=120)  # a copier renews its claim every few seconds while bytes flow
CLAIM_RENEW = 5.0  # seconds between renewals
WAIT_POLL = 0.5  # seconds between looks at a copy another job is making
PROGRESS_EVERY = 1.0  # seconds between progress reports (each one writes the job's row)


def image_is_on_host(*, image: Image, host: Host) -> bool:
    """Whether the image's own volume is on `host` (no copy needed there)."""
    return image.pool.host_id == host.pk


def image_copy_ready(*, image: Image, host: Host) -> bool:
    """Whether VMs on `host` can be built on the image now, as the database says: its own host, or a
    complete copy there (image_copy_ensure still checks the copy's volume in libvirt)."""
    return image_is_on_host(image=image, host=host) or ImageCopy.objects.filter(
        image=image, pool__host=host).exclude(path="").exists()


def _own(image: Image) -> ImageCopy:
    """The image itself, as an (unsaved) copy on its own host."""
    return ImageCopy(image=image, pool=image.pool, volume_name=image.volume_name, path=image.path,
                     kernel_path=image.kernel_path, initrd_path=image.initrd_path,
                     size_bytes=image.actual_size_bytes)


def copy_volume_names(*, image: Image, host: Host) -> tuple[str, str, str]:
    """The volumes of the image's copy on `host`: its disk, kernel and initrd. The host's id is in the
    names: two hosts whose pools are one directory (two daemons of one machine) keep their copies
    apart, and never overwrite the image's own volume."""
    stem, dot, ext = image.volume_name.rpartition(".")
    if not dot:
        stem, ext = image.volume_name, ""
    disk = f"{stem}-h{host.pk}" + (f".{ext}" if ext else "")
    return (disk, *_companions(disk))


def _companions(disk: str) -> tuple[str, str]:
    """The kernel and initrd volumes that go with a copy's disk volume."""
    stem = disk.rpartition(".")[0] or disk
    return f"{stem}-kernel", f"{stem}-initrd"


def _discard(driver_uri: str, pool: str, names: tuple[str, ...]) -> list[str]:
    """Delete what a copy left of these volumes (a missing one is fine); the names it could not delete."""
    driver = get_driver(driver_uri)
    failed = []
    for name in names:
        try:
            driver.volume_info(pool=pool, name=name)
        except NotFound:
            continue  # looked up first: deleting a missing volume refreshes the pool, refused while it builds
        except PortalError:
            pass
        try:
            driver.delete_volume(pool=pool, name=name)
        except NotFound:
            pass
        except PortalError as exc:
            log.warning("could not delete volume %s in pool %s of %s: %s", name, pool, driver_uri, exc.message)
            failed.append(name)
    return failed


def _file_size(image: Image, path: str, what: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError as exc:  # the path is for administrators (detail): a VM's owner reads this job error
        raise Conflict(f"The {what} of image {image.name} is missing on the portal server; it cannot be copied "
                       "to another host. An administrator must register the image again.",
                       detail=f"{what} {path}: {exc.strerror or exc}") from None


def image_copy_ensure(*, image: Image, host: Host, progress: Progress | None = None,
                      timeout: float = 3600.0) -> ImageCopy:
    """The image's complete copy in `host`'s portal pool, made now if needed (streamed through libvirt
    from the image's host; the kernel and initrd from the portal server's files). On the image's own host:
    the image itself (unsaved, see the module). A copy made already is checked in libvirt and made again
    if its volume went missing. Another job's copy under way is waited for (up to `timeout` seconds),
    never made twice. `progress(copied, total)` is called at most once a second while bytes flow."""
    image = Image.objects.select_related("pool__host").get(pk=image.pk)
    if image_is_on_host(image=image, host=host):
        return _own(image)
    pool = pool_for_host(host)
    names = copy_volume_names(image=image, host=host)
    deadline = time.monotonic() + timeout
    while True:
        claim = secrets.token_hex(16)
        with transaction.atomic():
            # The image's row first (the order image_delete locks in): a deleted image is not copied.
            if Image.objects.select_for_update().filter(pk=image.pk).first() is None:
                raise NotFound(f"Image {image.name} was deleted meanwhile.")
            row, _ = ImageCopy.objects.get_or_create(image=image, pool=pool, defaults={"volume_name": names[0]})
            row = ImageCopy.objects.select_for_update().get(pk=row.pk)
            now = timezone.now()
            busy = bool(not row.path and row.claim and row.claimed_at and row.claimed_at > now - CLAIM_STALE)
            if not row.path and not busy:
                row.claim, row.claimed_at, row.volume_name = claim, now, names[0]
                row.save(update_fields=["claim", "claimed_at", "volume_name"])
        if row.path:
            try:
                get_driver(host.uri).volume_info(pool=pool.name, name=row.volume_name)
            except NotFound:  # recorded as made, but gone from libvirt: made again
                log.warning("the copy of image %s on %s went missing; copying it again", image.name, host.name)
                ImageCopy.objects.filter(pk=row.pk, path=row.path).update(path="")
                continue
            return row
        if busy:
            if time.monotonic() > deadline:
                raise Conflict(f"The copy of image {image.name} to host {host.name} by another job is "
                                  "taking too long; try again later.")
            time.sleep(WAIT_POLL)
            continue
        return _copy(image=image, host=host, pool=pool, row=row, claim=claim, names=names, progress=progress)


def _copy(*, image: Image, host: Host, pool: StoragePool, row: ImageCopy, claim: str,
          names: tuple[str, str, str], progress: Progress | None) -> ImageCopy:
    """Make the claimed copy: what an earlier attempt left is deleted first; a failure deletes what
    this one made and releases the claim."""
    source = get_driver(image.pool.host.uri)
    dest = get_driver(host.uri)
    kernel_size = _file_size(image, image.kernel_path, "kernel") if image.kernel_path else 0
    initrd_size = _file_size(image, image.initrd_path, "initrd") if image.initrd_path else 0
    state = {"renewed": time.monotonic(), "reported": 0.0}

    def tick(done: int, total: int) -> None:
        now = time.monotonic()
        if now - state["renewed"] >= CLAIM_RENEW:
            state["renewed"] = now
            ImageCopy.objects.filter(pk=row.pk, claim=claim).update(claimed_at=timezone.now())
        if progress is not None and (now - state["reported"] >= PROGRESS_EVERY or done >= total):
            state["reported"] = now
            progress(done, total)

    try:
        leftovers = _discard(host.uri, pool.name, names)
        if leftovers:
            raise PortalError(f"Could not remove the half copy of image {image.name} on host {host.name} "
                              f"({', '.join(leftovers)}).")
        disk_total = [image.actual_size_bytes or 0]

        def disk_progress(sent: int, total: int) -> None:
            disk_total[0] = total
            tick(sent, total + kernel_size + initrd_size)

        try:
            info = source.copy_volume_to(pool=image.pool.name, name=image.volume_name, dest=dest,
                                         dest_pool=pool.name, dest_name=names[0], progress=disk_progress)
        except NotFound as exc:  # said in the image's words, not as "a disk of this VM is missing"
            raise Conflict(f"The volume of image {image.name} is missing on its host {image.pool.host.name}; "
                           f"it cannot be copied to host {host.name}. An administrator must register the "
                           "image again.", detail=exc.detail) from exc
        except PortalError as exc:
            if getattr(exc, "transient", False):  # a busy host: the job runner tries again as it is
                raise
            raise Conflict(f"Copying image {image.name} from host {image.pool.host.name} to host {host.name} "
                           f"failed: {exc.message}", detail=exc.detail) from exc
        kernel = initrd = ""
        done = disk_total[0]
        if image.kernel_path:
            kernel = dest.upload_volume(
                pool=pool.name, name=names[1], source_path=image.kernel_path, fmt="raw",
                progress=lambda s, _t: tick(done + s, done + kernel_size + initrd_size)).path
            done += kernel_size
        if image.initrd_path:
            initrd = dest.upload_volume(
                pool=pool.name, name=names[2], source_path=image.initrd_path, fmt="raw",
                progress=lambda s, _t: tick(done + s, done + initrd_size)).path
        with transaction.atomic():
            finished = ImageCopy.objects.filter(pk=row.pk, claim=claim).update(
                path=info.path, kernel_path=kernel, initrd_path=initrd, size_bytes=info.allocation_bytes,
                claim="", claimed_at=None)
            if not finished:  # the image was deleted meanwhile (its copies' rows with it)
                raise NotFound(f"Image {image.name} was deleted while it was being copied to host {host.name}.")
            audit(actor=None, via=Via.SYSTEM, action="image.copy", target=image,
                  message=f"Copied image {image.name} to host {host.name} (pool {pool.name}, "
                          f"{info.allocation_bytes} bytes)",
                  data={"host": host.name, "pool": pool.name, "volume": names[0]})
    except BaseException:
        _discard(host.uri, pool.name, names)
        ImageCopy.objects.filter(pk=row.pk, claim=claim).update(claim="", claimed_at=None)
        raise
    row.refresh_from_db()
    return row


def image_copies_remove(*, copies: list[ImageCopy]) -> None:
    """Delete the volumes of an image's copies (after its row, and theirs, are gone): a host that
    cannot be reached keeps them (logged: a volume no image lists harms nothing but space)."""
    for copy in copies:
        names = (copy.volume_name, *_companions(copy.volume_name))
        host = copy.pool.host
        try:
            failed = _discard(host.uri, copy.pool.name, names)
        except Exception:
            log.exception("could not remove the copy of image %s on host %s", copy.image_id, host.name)
            continue
        if failed:
            log.warning("image copy on host %s: volumes %s could not be removed", host.name, ", ".join(failed))
