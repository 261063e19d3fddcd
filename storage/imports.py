"""Image imports: an upload, a URL or a host file becomes a library image through one safe pipeline.

Record phase (`image_import`, in the request): who may import what where (users into their own
space, administrators also into the library; host paths only for administrators and only inside
IMAGE_IMPORT_DIRS), a name free among images and among imports still running, an announced size
within the limits and the owner's disk quota; then an `image.import` job.

Act phase (`image_import_run`, in the job): fetch (a URL streamed to the staging directory, with a
stall timeout, a size limit and an optional SHA-256), then for each disk: our own format detection,
the declared format checked against it, `qemu-img info` with that explicit format (backing files,
external data files, VMDK descriptors, corrupt or huge images refused), conversion to qcow2 (ISOs are
kept as they are), the stored file's SHA-256, the copy into the host's pool through the gateway; and
finally, under the owner's quota lock, the Image rows. A failure anywhere removes the staging files
and any volume written, and leaves no Image row.

`image_prepare_and_store` is the same pipeline run synchronously for `storage.services.image_register`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import secrets
import shutil
import socket
import stat
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import requests
import urllib3.exceptions
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from cluster.choices import HostStatus
from cluster.models import Host
from portal.actors import Actor, is_admin, require_user
from portal.audit import audit
from portal.choices import JobStatus
from portal.exceptions import (
    Conflict,
    NotFound,
    PermissionDenied,
    PortalError,
    QuotaExceeded,
    ValidationFailed,
)
from portal.hypervisor import get_driver
from portal.jobs import JobContext, job_create
from portal.models import Job
from quotas.selectors import quota_usage
from quotas.services import quota_reserve

from . import imageio
from .models import Image, StoragePool, Upload, Volume
from .pools import image_volume_name, pool_ensure, pool_for_host
from .uploads import check_image_size, upload_claim, upload_finish, upload_path
from .validation import IMAGE_NAME_RE, check_login_user

log = logging.getLogger(__name__)

GIB = 1024**3
IMAGE_IMPORT = "image.import"  # the job kind (handler in storage.jobs)
SOURCES = ("upload", "url", "path")
IMAGE_NAME_MAX = 60
SHA256_HEX = frozenset("0123456789abcdef")
URL_MAX = 2000
DOWNLOAD_CHUNK = 1024 * 1024
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
# What qemu-img convert may write beyond the virtual size (qcow2 metadata: L1/L2 tables, refcounts).
CONVERT_MARGIN = 64 * 1024**2


@dataclass(frozen=True)
class ImportSource:
    """An extra place images are imported from, offered by an app above storage (storage never imports
    it): `check(actor, source_params)` validates in the record phase and returns the parameters to keep
    (a "size" announced is checked against the limits; "where" is what Image.source records);
    `fetch(params, dest_path, progress, limit)` streams the bytes into `dest_path` in the job (progress
    0–100, at most `limit` bytes, raising a PortalError on any failure); `registered(images, params, job)`
    runs inside the transaction that registers the images (to link them to where they came from)."""

    check: Callable[[Actor, dict[str, Any]], dict[str, Any]]
    fetch: Callable[[dict[str, Any], str, Callable[[float], None], int], None]
    registered: Callable[[list[Image], dict[str, Any], Job], None] | None = None
    admin_only: bool = True
    label: str = ""


_EXTRA_SOURCES: dict[str, ImportSource] = {}


def register_import_source(name: str, source: ImportSource) -> None:
    """Offer `image_import(source=name, source_params=...)` (called from an app's ready())."""
    if name in SOURCES:
        raise ValueError(f"{name} is a built-in import source")
    _EXTRA_SOURCES[name] = source


def import_sources() -> tuple[str, ...]:
    return (*SOURCES, *_EXTRA_SOURCES)


def gib_ceil(n: int) -> int:
    """Whole GiB, rounded up: what an image of `n` bytes charges to a disk quota."""
    return -(-int(n) // GIB)


def volume_prefix() -> str:
    """Portals sharing one libvirtd keep their image volumes apart by instance id."""
    return "image" if settings.INSTANCE_ID == "default" else f"image-{settings.INSTANCE_ID}"


def check_image_name(name: object) -> str:

    text = str(name or "").strip()
    if not IMAGE_NAME_RE.match(text):
        raise ValidationFailed("Image name must be 2–60 lowercase letters, digits or hyphens, starting and "
                               "ending with a letter or digit.", field="name")
    return text


def _check_name_free(name: str, *, exclude_job: Any = None) -> None:
    if Image.objects.filter(name=name).exists():
        raise ValidationFailed(f"An image named {name!r} exists already; choose another name.", field="name")
    running = Job.objects.filter(kind=IMAGE_IMPORT, status__in=JobStatus.ACTIVE, params__name=name)
    if exclude_job is not None:
        running = running.exclude(pk=exclude_job)
    if running.exists():
        raise ValidationFailed(f"An image named {name!r} is being imported already (another upload or "
                               "import with the same name); choose another name.", field="name")


def _check_imports_per_user(user: Any) -> None:
    """At most IMAGE_IMPORTS_PER_USER import jobs queued or running per user (their user row locked, so
    two requests at once count each other)."""
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()
    active = Job.objects.filter(kind=IMAGE_IMPORT, actor=user, status__in=JobStatus.ACTIVE).count()
    if active >= settings.IMAGE_IMPORTS_PER_USER:
        raise Conflict(f"You have {active} imports queued or running; at most {settings.IMAGE_IMPORTS_PER_USER} "
                       "at once. Wait for one to finish.")


def check_import_path(path: object) -> str:
    """A host path an administrator names: a regular file whose real path (symlinks resolved) lies inside
    one of IMAGE_IMPORT_DIRS."""
    text = str(path or "").strip()
    if not text or "\0" in text or not os.path.isabs(text):
        raise ValidationFailed("Give the absolute path of an image file on the portal server.", field="path")
    real = os.path.realpath(text)
    allowed = [os.path.realpath(d) for d in settings.IMAGE_IMPORT_DIRS]
    if not any(os.path.commonpath([real, d]) == d for d in allowed if d):
        raise ValidationFailed(f"{text} is not inside the directories images may be imported from "
                               f"({', '.join(settings.IMAGE_IMPORT_DIRS) or 'none configured'}).", field="path")
    if not os.path.isfile(real):
        raise ValidationFailed(f"No such image file: {text}", field="path")
    return real


def check_url(url: object) -> str:
    text = str(url or "").strip()
    if len(text) > URL_MAX:
        raise ValidationFailed(f"The URL is too long (at most {URL_MAX} characters).", field="url")
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationFailed("Only http:// and https:// URLs can be imported.", field="url")
    if any(ord(c) < 33 for c in text):
        raise ValidationFailed("The URL contains spaces or control characters.", field="url")
    return text


def check_sha256(value: object) -> str:
    text = str(value or "").strip().lower()
    if text and (len(text) != 64 or not set(text) <= SHA256_HEX):
        raise ValidationFailed("SHA-256 must be 64 hexadecimal digits.", field="sha256")
    return text


def _pick_host(host: Host | None) -> Host:
    if host is not None:
        return host
    found = (Host.objects.filter(enabled=True, status=HostStatus.UP).first()
             or Host.objects.filter(enabled=True).first())
    if found is None:
        raise Conflict("There is no enabled host to store the image on; an administrator must add one.")
    return found


def image_import(*, actor: Actor, via: str, source: str, upload: object = None, url: str | None = None,
                 path: str | None = None, sha256: str | None = None, name: str, title: str = "",
                 fmt: str | None = None, kind: str | None = None, visibility: str | None = None,
                 groups: Iterable[Group] = (), host: Host | None = None, owner: Any = None,
                 description: str = "", os_name: str = "", cloud_init: bool = False, login_user: str = "",
                 min_disk_gib: int = 1, source_params: dict[str, Any] | None = None,
                 storage_domain: str | None = None, default_memory_mib: int | None = None) -> Job:
    """Queue the import of an image (an `image.import` job).

    `source`: "upload" (`upload`: the id of one of the actor's complete uploads), "url" (`url`,
    http/https; `sha256` optional) or "path" (administrators only; `path` inside IMAGE_IMPORT_DIRS).
    `fmt`: the format the caller says it is (refused if the file is something else); `kind`: disk,
    template or iso (default: iso for ISO files, template for OVA appliances, disk otherwise).
    Users import into their own space (`owner` is the actor; private unless shared); administrators
    import into the library (no owner; public by default) or for the `owner` they name.
    A source registered with `register_import_source` takes its `source_params`; `storage_domain`
    names a data domain of the host to store the image in (default: the host's portal pool)."""

    user = None if actor is None else require_user(actor, "Sign in to import images.")
    admin = actor is None or is_admin(actor)
    extra = _EXTRA_SOURCES.get(source)
    if source not in SOURCES and extra is None:
        raise ValidationFailed(f"Source must be one of {', '.join(import_sources())}.", field="source")
    if extra is not None and extra.admin_only and not admin:
        raise PermissionDenied(f"Only administrators import images from {extra.label or source}.")
    if owner is not None and not admin and getattr(owner, "pk", None) != getattr(user, "pk", None):
        raise PermissionDenied("Only administrators import images for other users.")
    if not admin:
        owner = user
    name = check_image_name(name)
    title = (title or "").strip() or name
    if len(title) > 100:
        raise ValidationFailed("Title is too long (at most 100 characters).", field="title")
    if fmt and fmt not in (*imageio.FORMATS, "ova"):
        raise ValidationFailed(f"Format must be one of {', '.join((*imageio.FORMATS, 'ova'))}.", field="format")
    if kind and kind not in Image.Kind.values:
        raise ValidationFailed(f"Kind must be one of {', '.join(Image.Kind.values)}.", field="kind")
    if visibility is None:
        visibility = Image.Visibility.PRIVATE if owner is not None else Image.Visibility.PUBLIC
    if visibility not in Image.Visibility.values:
        raise ValidationFailed(f"Visibility must be one of {', '.join(Image.Visibility.values)}.", field="visibility")
    groups = list({g.pk: g for g in groups}.values())
    if groups and not admin:
        mine = set(user.groups.values_list("pk", flat=True)) if user else set()
        foreign = [g.name for g in groups if g.pk not in mine]
        if foreign:
            raise ValidationFailed(f"You are not a member of {', '.join(foreign)}.", field="groups")
    if visibility == Image.Visibility.GROUP and not groups:
        raise ValidationFailed("Name the groups that may use an image shared with groups.", field="groups")
    check_login_user(login_user)
    sha = check_sha256(sha256)
    if not isinstance(min_disk_gib, int) or min_disk_gib < 1:
        raise ValidationFailed("Minimum disk must be a whole number of GiB, 1 or more.", field="min_disk_gib")
    if default_memory_mib is not None and (not isinstance(default_memory_mib, int) or default_memory_mib < 1):
        raise ValidationFailed("Default memory must be a whole number of MiB, 1 or more.", field="default_memory_mib")
    host = _pick_host(host)
    pool_name = ""
    if storage_domain:
        if not admin:
            raise PermissionDenied("Only administrators choose the storage domain of an import.")
        pool_name = pool_for_host(host, str(storage_domain)).name
    params: dict[str, Any] = {
        "source": source, "name": name, "title": title, "fmt": fmt or "", "kind": kind or "",
        "visibility": visibility, "group_ids": [g.pk for g in groups], "host_id": host.pk,
        "owner_id": getattr(owner, "pk", None), "description": description, "os_name": os_name,
        "cloud_init": bool(cloud_init), "login_user": login_user, "sha256": sha, "min_disk_gib": min_disk_gib}
    if pool_name:
        params["pool_name"] = pool_name
    if default_memory_mib:
        params["default_memory_mib"] = default_memory_mib
    with transaction.atomic():
        # The host row's lock makes two imports for one host take turns (PostgreSQL), so the second
        # sees the first one's job and its name.
        Host.objects.select_for_update().filter(pk=host.pk).first()
        _check_name_free(name)
        if user is not None:
            _check_imports_per_user(user)
        if source == "upload":
            row = upload_claim(actor=actor, upload_id=upload)
            check_image_size(owner=owner, size=row.length)
            params.update(upload_id=str(row.pk), filename=row.filename)
            where = f"upload {row.filename or row.pk}"
        elif source == "url":
            params["url"] = check_url(url)
            where = params["url"]
        elif extra is not None:
            clean = extra.check(actor, dict(source_params or {}))
            if clean.get("size"):
                check_image_size(owner=owner, size=int(clean["size"]))
            params["source_params"] = clean
            where = str(clean.get("where") or source)
        else:
            if not admin:
                raise PermissionDenied("Only administrators import files from the portal server.")
            real = check_import_path(path)
            check_image_size(owner=owner, size=os.path.getsize(real))
            params["path"] = real
            where = real
        job = job_create(kind=IMAGE_IMPORT, actor=actor, via=via, params=params, max_attempts=1)
        Job.objects.filter(pk=job.pk).update(target_type="image", target_name=name)
        job.target_type, job.target_name = "image", name
        audit(actor=actor, via=via, action=IMAGE_IMPORT, target_type="image", target_name=name, job=job,
              message=f"Queued the import of image {name} from {where if admin else source}")
    return job


# --- the act phase -------------------------------------------------------------------------------

@dataclass
class Prepared:
    """One disk ready for the pool: the file to store, what it is, and what it came as."""

    path: str
    fmt: str  # as stored: qcow2, or raw for an ISO
    kind: str
    source_format: str
    virtual_size: int
    actual_size: int
    sha256: str = ""


@dataclass
class _Plan:
    disks: list[Prepared] = field(default_factory=list)
    appliance: imageio.Appliance | None = None


Progress = Callable[[int, str], None]


def _scaled(progress: Progress, lo: int, hi: int, step: str) -> Callable[[float], None]:
    """A callback taking 0–100 (imageio's convert and checksum, downloads, pool copies) that reports job
    progress between lo and hi, at most once per percent of the job."""
    last = [-1]

    def report(value: float) -> None:
        percent = lo + int((hi - lo) * max(0.0, min(100.0, value)) / 100)
        if percent != last[0]:
            last[0] = percent
            progress(percent, step)

    return report


class _InternalAddress(ValidationFailed):
    """A user's URL leads to an address inside the portal's network."""


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for text in settings.IMAGE_URL_ALLOWED_NETWORKS:
        try:
            networks.append(ipaddress.ip_network(str(text).strip(), strict=False))
        except ValueError:
            log.error("IMAGE_URL_ALLOWED_NETWORKS: %r is not a network (CIDR); ignored", text)
    return networks


def address_allowed(address: str) -> bool:
    """May a user's URL import connect to `address`? Public addresses only (not loopback, private,
    link-local, multicast, reserved or unspecified ones), unless IMAGE_URL_ALLOWED_NETWORKS names it."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip.version == net.version and ip in net for net in _allowed_networks()):
        return True
    return ip.is_global and not (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast
                                 or ip.is_reserved or ip.is_unspecified)


def _refuse_internal() -> _InternalAddress:
    return _InternalAddress("The URL leads to an address inside the portal's network; images can only be "
                            "imported from public addresses. Ask an administrator to import it.", field="url")


def check_url_target(url: str) -> None:
    """Resolve the URL's host: every address it has must be one a user may reach (`address_allowed`)."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname or "", port, type=socket.SOCK_STREAM)
    except (OSError, ValueError, UnicodeError):
        raise ValidationFailed("The URL's host name could not be resolved; check the URL.", field="url") from None
    if not infos or not all(address_allowed(str(info[4][0])) for info in infos):
        raise _refuse_internal()


class _PublicOnly:
    """A urllib3 connection that checks the address it actually connected to (a host name that resolves
    to another address at connect time than when it was checked gains nothing)."""

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        try:
            peer = str(sock.getpeername()[0])
        except OSError:
            peer = ""
        if not address_allowed(peer):
            sock.close()
            raise _refuse_internal()
        return sock


def _public_session() -> requests.Session:
    """A requests session for users' downloads: no proxies from the environment, and every connection's
    peer address checked."""
    class PublicHTTPConnection(_PublicOnly, HTTPConnection):
        pass

    class PublicHTTPSConnection(_PublicOnly, HTTPSConnection):
        pass

    class PublicHTTPPool(HTTPConnectionPool):
        ConnectionCls = PublicHTTPConnection

    class PublicHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = PublicHTTPSConnection

    class PublicAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": PublicHTTPPool, "https": PublicHTTPSPool}

    session = requests.Session()
    session.trust_env = False
    adapter = PublicAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _content_length(value: str | None) -> int:
    """The announced length, or 0 when the header is missing or not a plain decimal number."""
    text = (value or "").strip()
    if not text or len(text) > 20 or not text.isascii() or not text.isdigit():
        return 0
    return int(text)


def _open(session: requests.Session, url: str, *, restricted: bool, timeout: int) -> requests.Response:
    """GET `url`, following at most MAX_REDIRECTS redirects ourselves: each hop's URL is checked (http or
    https; for users, a public address) before it is fetched."""
    for hop in range(MAX_REDIRECTS + 1):
        try:
            check_url(url)
        except ValidationFailed:
            if hop == 0:
                raise
            raise ValidationFailed("The URL redirects to an address that is not http:// or https://; nothing "
                                   "was imported.", field="url") from None
        if restricted:
            check_url_target(url)
        response = session.get(url, stream=True, timeout=(timeout, timeout), allow_redirects=False,
                               headers={"Accept-Encoding": "identity"})
        location = response.headers.get("Location")
        if response.status_code in REDIRECTS and location:
            response.close()
            url = urllib.parse.urljoin(url, location)
            continue
        return response
    raise ValidationFailed(f"The URL redirects more than {MAX_REDIRECTS} times; nothing was imported.", field="url")


def download(url: str, dest: str, *, limit: int, sha256: str = "", restricted: bool = True,
             progress: Callable[[float], None] | None = None) -> int:
    """Stream `url` into `dest` (progress 0–100 when the size is announced): at most `limit` bytes, failing
    when nothing arrives for IMAGE_URL_TIMEOUT_SECONDS, when the whole download takes longer than
    IMAGE_URL_MAX_SECONDS, or when after IMAGE_URL_GRACE_SECONDS it averages less than
    IMAGE_URL_MIN_BYTES_PER_SECOND; the SHA-256 is checked when given. `restricted` (users' imports):
    only public addresses, on every redirect and every connection. Returns the bytes received."""
    timeout = settings.IMAGE_URL_TIMEOUT_SECONDS
    deadline = settings.IMAGE_URL_MAX_SECONDS
    grace, min_rate = settings.IMAGE_URL_GRACE_SECONDS, settings.IMAGE_URL_MIN_BYTES_PER_SECOND
    started = time.monotonic()
    digest = hashlib.sha256()
    received = 0
    session = _public_session() if restricted else requests.Session()
    try:
        with session, _open(session, url, restricted=restricted, timeout=timeout) as response:
            if response.status_code != 200:
                raise ValidationFailed(f"The URL answered {response.status_code} {response.reason or ''}".strip()
                                       + "; nothing was imported.", field="url")
            total = _content_length(response.headers.get("Content-Length"))
            if total > limit:
                raise ValidationFailed(f"The file at the URL is too large ({total} bytes; at most {limit}).",
                                       field="url")
            with open(dest, "xb") as fh:
                while True:
                    # read1: whatever has arrived (a trickle of bytes still returns), so the clock is
                    # checked at least every IMAGE_URL_TIMEOUT_SECONDS.
                    piece = response.raw.read1(DOWNLOAD_CHUNK, decode_content=False)
                    if not piece:
                        break
                    received += len(piece)
                    if received > limit:
                        raise ValidationFailed(f"The file at the URL is larger than the {limit} bytes allowed.",
                                               field="url")
                    fh.write(piece)
                    digest.update(piece)
                    if progress is not None and total:
                        progress(received * 100 / total)
                    elapsed = time.monotonic() - started
                    if elapsed > deadline:
                        raise ValidationFailed(f"The download took longer than {deadline} seconds and was "
                                               "stopped; nothing was imported.", field="url")
                    if elapsed > grace and received < min_rate * elapsed:
                        raise ValidationFailed(f"The download is too slow ({received / elapsed / 1024:.1f} KiB/s "
                                               f"on average; at least {min_rate / 1024:.0f} KiB/s are needed) "
                                               "and was stopped; nothing was imported.", field="url")
            if total and received < total:
                raise ValidationFailed(f"The download ended early: {received} of the {total} bytes announced "
                                       "arrived; nothing was imported.", field="url")
    except PortalError:
        raise
    except (requests.Timeout, TimeoutError, urllib3.exceptions.TimeoutError):
        raise ValidationFailed(f"The download stalled: nothing arrived for {timeout} seconds.", field="url") from None
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
        if "timed out" in str(exc).lower():  # a read timeout inside the body: urllib3 wraps it this way
            raise ValidationFailed(f"The download stalled: nothing arrived for {timeout} seconds.",
                                   field="url") from None
        raise ValidationFailed(f"The download failed ({type(exc).__name__}); check the URL.", field="url") from None
    if received == 0:
        raise ValidationFailed("The URL gave an empty file.", field="url")
    if sha256 and digest.hexdigest() != sha256:
        raise ValidationFailed(f"The downloaded file's SHA-256 is {digest.hexdigest()}, not the {sha256} "
                               "given; nothing was imported.", field="sha256")
    return received


def _disk_remaining(owner: Any) -> Any:
    return next(u for u in quota_usage(user=owner) if u.resource == "disk_gib")


def check_staging_space(work: str, needed: int, what: str) -> None:
    """Refuse before writing `needed` bytes into the staging directory when it has not that much free."""
    free = shutil.disk_usage(work).free
    if needed > free:
        raise Conflict(f"The portal server has not enough free staging space for {what} ({needed} bytes needed, "
                       f"{free} free); try again later or ask an administrator.")


@dataclass
class Budget:
    """What the images of one import may take, checked right after each disk is probed (before anything
    is converted): the owner's remaining disk quota (read only; the charge is made under the quota
    lock at the end) and the staging directory's free space."""

    owner: Any  # None: the library (no quota)
    work: str
    charged_gib: int = 0

    def admit(self, virtual_size: int, *, converting: bool, label: str) -> int | None:
        """Check one more disk of `virtual_size`; returns the most bytes its conversion may write."""
        gib = gib_ceil(virtual_size)
        if self.owner is not None:
            disk = _disk_remaining(self.owner)
            wanted = self.charged_gib + gib
            if wanted > disk.remaining:
                raise QuotaExceeded(resource=disk.label, requested=wanted, limit=disk.limit, in_use=disk.used,
                                    unit=disk.unit, requested_resources={"vms": 0, "vcpus": 0, "memory_mib": 0,
                                                                         "disk_gib": wanted})
        self.charged_gib += gib
        if not converting:
            return None
        most = virtual_size + virtual_size // 256 + CONVERT_MARGIN
        check_staging_space(self.work, most, label)
        return most


def _prepare_one(src: str, fmt: str, *, kind: str, work: str, index: int, progress: Progress,
                 lo: int, hi: int, label: str, budget: Budget) -> Prepared:
    probe = imageio.probe(src, fmt)
    most = budget.admit(probe.virtual_size, converting=fmt != "iso", label=label)
    if fmt == "iso":
        out, stored, fmt_stored = src, probe, "raw"
    else:
        out = os.path.join(work, f"disk{index}.qcow2")
        progress(lo, f"Converting {label} from {fmt} to qcow2")
        stored = imageio.convert(src, fmt, out, max_bytes=most,
                                 progress=_scaled(progress, lo, lo + (hi - lo) * 2 // 3,
                                                  f"Converting {label} from {fmt} to qcow2"))
        fmt_stored = "qcow2"
    mid = lo + (hi - lo) * 2 // 3 if fmt != "iso" else lo
    progress(mid, f"Computing the checksum of {label}")
    digest = imageio.sha256_file(out, progress=_scaled(progress, mid, hi, f"Computing the checksum of {label}"))
    return Prepared(path=out, fmt=fmt_stored, kind=kind, source_format=fmt,
                    virtual_size=max(probe.virtual_size, stored.virtual_size), actual_size=stored.actual_size,
                    sha256=digest)


def prepare(src: str, *, declared: str | None, kind: str | None, work: str, progress: Progress,
            lo: int = 30, hi: int = 80, owner: Any = None) -> _Plan:
    """Detect, check, probe and convert `src` (an OVA: each of its disks) into files under `work`; each
    disk's virtual size must fit `owner`'s remaining disk quota (None: the library) and the staging
    space before it is converted."""
    budget = Budget(owner=owner, work=work)
    progress(lo, "Detecting the image format")
    fmt = imageio.detect(src)
    imageio.check_declared(fmt, declared or None)
    plan = _Plan()
    if fmt == "ova":
        if kind == Image.Kind.ISO:
            raise ValidationFailed("An OVA appliance is not an ISO image.", field="kind")
        appliance, disk_paths = imageio.ova_extract(src, os.path.join(work, "ova"))
        if not disk_paths:
            raise ValidationFailed("The OVA appliance has no disks.", field="source")
        plan.appliance = appliance
        span = (hi - lo) // len(disk_paths)
        for i, disk in enumerate(disk_paths):
            disk_fmt = imageio.detect(disk)
            if disk_fmt in ("ova", "iso"):
                raise ValidationFailed(f"Disk {i + 1} of the OVA is not a disk image ({disk_fmt}).", field="source")
            disk_kind = Image.Kind.TEMPLATE if i == 0 else Image.Kind.DISK
            plan.disks.append(_prepare_one(disk, disk_fmt, kind=disk_kind, work=work, index=i, progress=progress,
                                           lo=lo + i * span, hi=lo + (i + 1) * span, label=f"disk {i + 1}",
                                           budget=budget))
        return plan
    if fmt == "iso":
        if kind and kind != Image.Kind.ISO:
            raise ValidationFailed("This file is an ISO image; it can only be imported as an ISO.", field="kind")
        wanted: str = Image.Kind.ISO
    else:
        if kind == Image.Kind.ISO:
            raise ValidationFailed(f"This file is a {fmt} disk image, not an ISO.", field="kind")
        wanted = kind or Image.Kind.DISK
    plan.disks.append(_prepare_one(src, fmt, kind=wanted, work=work, index=0, progress=progress, lo=lo, hi=hi,
                                   label="the image", budget=budget))
    return plan


def volume_taken(pool: StoragePool, volume: str) -> bool:
    """Does any Image or Volume row name this volume of the pool?"""
    return (Image.objects.filter(pool=pool, volume_name=volume).exists()
            or Volume.objects.filter(pool=pool, name=volume).exists())


def _new_volume_name(driver: Any, pool: StoragePool, name: str, ext: str) -> str:
    """A volume name of the image's own (its name and a random token, like a template's), free in the
    pool and among the rows: an import never replaces a volume it did not write."""

    for _ in range(5):
        volume = image_volume_name(f"{name}-{secrets.token_hex(4)}", fmt=ext)
        if volume_taken(pool, volume):
            continue
        try:
            driver.volume_info(pool=pool.name, name=volume)
        except NotFound:
            return volume
    raise Conflict(f"No free volume name for image {name} in the pool; try again.")


def _target_pool(host: Host, pool_name: str = "") -> StoragePool:
    """Where an import stores its volumes: the data domain named (as the host sees it), else the host's
    portal pool."""
    return pool_for_host(host, pool_name) if pool_name else pool_ensure(host=host)


def _store(host: Host, disks: list[Prepared], names: list[str], progress: Progress, lo: int, hi: int,
           written: list[tuple[StoragePool, str]],
           on_volume: Callable[[list[tuple[StoragePool, str]]], None] | None = None,
           pool_name: str = "") -> list[str]:
    """Copy each prepared file into the host's pool (or the data domain `pool_name`) as a new volume of
    its own; returns the volume paths. Volumes are added to `written` (and `on_volume` told) before they
    are created, so a failure can remove them."""

    pool = _target_pool(host, pool_name)
    driver = get_driver(host.uri)
    paths = []
    span = (hi - lo) // max(1, len(disks))
    for i, (disk, name) in enumerate(zip(disks, names, strict=True)):
        ext = "iso" if disk.kind == Image.Kind.ISO else disk.fmt
        volume = _new_volume_name(driver, pool, name, ext)
        step = f"Copying {name} into the storage pool of {host.name}"
        progress(lo + i * span, step)
        report = _scaled(progress, lo + i * span, lo + (i + 1) * span, step)
        written.append((pool, volume))
        if on_volume is not None:
            on_volume(written)

        def copied(sent: int, total: int, report: Callable[[float], None] = report) -> None:
            report(sent * 100 / total if total else 100.0)

        info = driver.upload_volume(pool=pool.name, name=volume, source_path=disk.path, fmt=disk.fmt,
                                    progress=copied)
        paths.append(info.path)
    return paths


def remove_unlisted_volumes(host: Host | None, written: Iterable[tuple[StoragePool, str]]) -> None:
    """Remove the volumes a failed import wrote, except any an Image or Volume row names (never
    another image's or disk's volume). Errors are logged, never raised: this runs while failing."""
    for pool, volume in written:
        try:
            if volume_taken(pool, volume):
                log.warning("not removing volume %s after a failed import: a row names it", volume)
                continue
            get_driver((host or pool.host).uri).delete_volume(pool=pool.name, name=volume)
        except PortalError as exc:
            log.warning("could not remove volume %s after a failed import: %s", volume, exc.detail or exc.message)
        except Exception:
            log.exception("could not remove volume %s after a failed import", volume)



def copy_host_file(path: str, work: str) -> str:
    """Copy an administrator's host file into the private staging directory `work`, opening it once:
    its real path must lie inside IMAGE_IMPORT_DIRS, it is opened without following a symlink, and the
    file opened must be that path (a file swapped for a symlink or moved meanwhile is refused). All the
    checks and the conversion then read the copy only. Returns the copy's path."""
    real = check_import_path(path)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        raise ValidationFailed(f"The image file {path} cannot be opened (it changed, or is a symlink now).",
                               field="path") from None
    try:
        info = os.fstat(fd)
        opened = os.path.realpath(f"/proc/self/fd/{fd}")
        if opened != real or not stat.S_ISREG(info.st_mode):
            raise ValidationFailed(f"The image file {path} changed while it was opened; it is refused.",
                                   field="path")
        if info.st_size > settings.IMAGE_MAX_BYTES:
            raise ValidationFailed(f"The file is {info.st_size} bytes; the limit is {settings.IMAGE_MAX_BYTES} "
                                   "bytes.", field="path")
        check_staging_space(work, info.st_size, "a copy of the file")
        os.set_blocking(fd, True)
        dest = os.path.join(work, "source")
        copied = 0
        with open(dest, "xb") as out:
            while piece := os.read(fd, DOWNLOAD_CHUNK):
                copied += len(piece)
                if copied > settings.IMAGE_MAX_BYTES:
                    raise ValidationFailed(f"The file grew beyond {settings.IMAGE_MAX_BYTES} bytes while it was "
                                           "copied; it is refused.", field="path")
                out.write(piece)
    finally:
        os.close(fd)
    return dest


def _ova_names(name: str, count: int) -> list[str]:
    names = [name] + [f"{name}-disk{i + 1}" for i in range(1, count)]
    for extra in names[1:]:
        if len(extra) > IMAGE_NAME_MAX:
            raise ValidationFailed(f"The OVA has {count} disks, named {name}-disk2 and on; {extra} is longer than "
                                   f"{IMAGE_NAME_MAX} characters: choose a shorter name.", field="name")
    return names


def _template_description(appliance: imageio.Appliance, base: str) -> str:
    nics = f"{appliance.nics} network adapter{'s' if appliance.nics != 1 else ''}"
    note = (f"Imported from the OVA appliance {appliance.name!r}: {appliance.vcpus} vCPUs, "
            f"{appliance.memory_mib} MiB memory, {len(appliance.disks)} disk(s), {nics}"
            + (f", OS {appliance.os}" if appliance.os else "") + ".")
    return f"{base}\n\n{note}".strip() if base else note


def image_import_run(ctx: JobContext) -> dict:
    """The `image.import` job: fetch, prepare, store and register (see the module's docstring)."""
    params = ctx.params
    name: str = params["name"]
    host = Host.objects.filter(pk=int(params.get("host_id") or 0)).first()
    if host is None:
        raise NotFound("The host chosen for the image is gone; import it again.")
    owner = get_user_model().objects.filter(pk=params["owner_id"]).first() if params.get("owner_id") else None
    if params.get("owner_id") and owner is None:
        raise NotFound("The image's owner is gone.")
    os.makedirs(settings.IMAGE_STAGING_DIR, mode=0o700, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f"import-{ctx.job.pk}-", dir=settings.IMAGE_STAGING_DIR)
    written: list[tuple[StoragePool, str]] = []
    imported = False

    def progress(percent: int, step: str) -> None:
        ctx.progress(percent, step)

    def remember(volumes: list[tuple[StoragePool, str]]) -> None:
        # Recorded in the job before each volume is created: a worker that dies mid-copy leaves the job's
        # clean-up (storage.jobs) the names to remove.
        params["volumes"] = [[pool.pk, volume] for pool, volume in volumes]
        Job.objects.filter(pk=ctx.job.pk).update(params=params)

    try:
        _check_name_free(name, exclude_job=ctx.job.pk)
        source = params["source"]
        if source == "upload":
            src = upload_path(Upload(pk=str(params["upload_id"])))
            if not os.path.isfile(src):
                raise ValidationFailed("The upload's data is gone; upload the file again.", field="upload")
            where = f"upload {params.get('filename') or params['upload_id']}"
        elif source in _EXTRA_SOURCES:
            other = _EXTRA_SOURCES[source]
            src = os.path.join(work, "download")
            what = f"Downloading the image from {other.label or source}"
            progress(1, what)
            other.fetch(params.get("source_params") or {}, src, _scaled(progress, 1, 30, what),
                        settings.IMAGE_MAX_BYTES)
            where = str((params.get("source_params") or {}).get("where") or source)
        elif source == "url":
            src = os.path.join(work, "download")
            limit = settings.IMAGE_MAX_BYTES
            progress(1, "Downloading the image")
            actor = ctx.job.actor
            restricted = actor is not None and not is_admin(actor)
            download(params["url"], src, limit=limit, sha256=params.get("sha256", ""), restricted=restricted,
                     progress=_scaled(progress, 1, 30, "Downloading the image"))
            where = params["url"]
        else:
            progress(1, "Copying the file into the staging directory")
            # Opened once, then only the private copy is read: the host file may change meanwhile.
            src = copy_host_file(params["path"], work)
            where = params["path"]
        if source != "url" and params.get("sha256"):
            progress(25, "Checking the given SHA-256")
            got = imageio.sha256_file(src)
            if got != params["sha256"]:
                raise ValidationFailed(f"The file's SHA-256 is {got}, not the {params['sha256']} given; "
                                       "nothing was imported.", field="sha256")
        plan = prepare(src, declared=params.get("fmt") or None, kind=params.get("kind") or None, work=work,
                       progress=progress, owner=owner)
        names = _ova_names(name, len(plan.disks)) if plan.appliance else [name]
        for extra in names[1:]:
            _check_name_free(extra)
        charge = sum(gib_ceil(d.virtual_size) for d in plan.disks)
        if owner is not None:  # fail before the copy when it cannot fit (checked again under the lock)
            with transaction.atomic():
                quota_reserve(user=owner, vms=0, vcpus=0, memory_mib=0, disk_gib=charge)
        paths = _store(host, plan.disks, names, progress, 80, 97, written, on_volume=remember,
                       pool_name=params.get("pool_name") or "")
        progress(98, "Registering the image")
        images = _register(ctx, plan=plan, names=names, paths=paths, host=host, owner=owner, charge=charge,
                           where=where, written=written)
        imported = True
    except IntegrityError:
        raise ValidationFailed(f"An image named {name!r} was registered meanwhile; choose another name.",
                               field="name") from None
    finally:
        # Whatever failed (a PortalError or a bug), nothing of the import stays behind; each step of the
        # clean-up runs even when another fails.
        if not imported:
            remove_unlisted_volumes(host, written)
        shutil.rmtree(work, ignore_errors=True)
        if params.get("upload_id"):
            try:
                upload_finish(upload_id=params["upload_id"], imported=imported)
            except Exception:
                log.exception("could not release upload %s after its import", params["upload_id"])
    first = images[0]
    Job.objects.filter(pk=ctx.job.pk).update(target_id=str(first.pk))
    result: dict[str, Any] = {"image": first.name, "image_id": first.pk, "kind": first.kind,
                              "format": first.source_format, "size_bytes": first.size_bytes,
                              "actual_size_bytes": first.actual_size_bytes, "checksum_sha256": first.checksum_sha256}
    if len(images) > 1:
        result["more_disks"] = [i.name for i in images[1:]]
        result["message"] = (f"Imported the appliance's first disk as template {first.name} and its other disks "
                             f"as disk images {', '.join(i.name for i in images[1:])}.")
    return result


def _register(ctx: JobContext, *, plan: _Plan, names: list[str], paths: list[str], host: Host, owner: Any,
              charge: int, where: str, written: list[tuple[StoragePool, str]]) -> list[Image]:

    params = ctx.params
    pool = _target_pool(host, params.get("pool_name") or "")
    groups = list(Group.objects.filter(pk__in=params.get("group_ids") or []))
    title = str(params.get("title") or names[0])
    images = []
    with transaction.atomic():
        if owner is not None:
            quota_reserve(user=owner, vms=0, vcpus=0, memory_mib=0, disk_gib=charge)
        for i, (disk, name, path) in enumerate(zip(plan.disks, names, paths, strict=True)):
            description = params.get("description", "")
            defaults: dict[str, Any] = {}
            if plan.appliance is not None and i == 0:
                description = _template_description(plan.appliance, description)
                defaults = {"default_vcpus": plan.appliance.vcpus, "default_memory_mib": plan.appliance.memory_mib}
                if not params.get("os_name") and plan.appliance.os:
                    defaults["os_name"] = plan.appliance.os[:100]
            elif plan.appliance is not None:
                description = f"Disk {i + 1} of the OVA appliance {plan.appliance.name!r} (template {names[0]})."
            elif params.get("default_memory_mib"):
                defaults = {"default_memory_mib": int(params["default_memory_mib"])}
            image = Image.objects.create(
                name=name, kind=disk.kind, title=title if i == 0 else f"{title} (disk {i + 1})",
                description=description, os_name=defaults.pop("os_name", params.get("os_name", "")), pool=pool,
                volume_name=written[i][1], path=path, format=disk.fmt, size_bytes=disk.virtual_size,
                actual_size_bytes=disk.actual_size, checksum_sha256=disk.sha256, source=where[:500],
                source_format="ova" if plan.appliance else disk.source_format,
                min_disk_gib=max(int(params.get("min_disk_gib") or 1), gib_ceil(disk.virtual_size)),
                cloud_init=bool(params.get("cloud_init")) and disk.kind != Image.Kind.ISO,
                login_user=params.get("login_user", ""), owner=owner, visibility=params["visibility"], **defaults)
            if groups:
                image.groups.set(groups)
            audit(actor=ctx.job.actor, via=ctx.job.via, action="image.import", target=image, job=ctx.job,
                  message=f"Imported image {name} ({disk.source_format}, {disk.virtual_size} bytes virtual, "
                          f"sha256 {disk.sha256[:12]}…)")
            images.append(image)
        extra = _EXTRA_SOURCES.get(params.get("source", ""))
        if extra is not None and extra.registered is not None:
            extra.registered(images, params.get("source_params") or {}, ctx.job)
    return images


# --- the same pipeline, synchronously (storage.services.image_register) --------------------------

def image_prepare_and_store(*, host: Host, name: str, source_path: str, declared: str | None,
                            progress: Progress | None = None) -> tuple[Prepared, str, str]:
    """Detect, probe, convert and copy one image file into the host's pool (no row): returns the prepared
    disk, the volume name and its path. Staging files are removed; on failure so is the volume."""
    os.makedirs(settings.IMAGE_STAGING_DIR, mode=0o700, exist_ok=True)
    work = tempfile.mkdtemp(prefix="register-", dir=settings.IMAGE_STAGING_DIR)
    written: list[tuple[StoragePool, str]] = []
    report = progress or (lambda _p, _s: None)
    ok = False
    try:
        plan = prepare(source_path, declared=declared, kind=None, work=work, progress=report, owner=None)
        if plan.appliance is not None:
            raise ValidationFailed("OVA appliances are imported with an import job, not registered.", field="format")
        disk = plan.disks[0]
        started = time.monotonic()
        paths = _store(host, [disk], [name], report, 80, 97, written)
        log.debug("stored %s in %.1f s", name, time.monotonic() - started)
        ok = True
        return disk, written[0][1], paths[0]
    finally:
        if not ok:
            remove_unlisted_volumes(host, written)
        shutil.rmtree(work, ignore_errors=True)
