"""Reading untrusted image files safely: detect, probe, convert, checksum, and unpack OVA appliances.

Every file that enters the library (an upload, a download, a host file, an OVA member) passes here
on the portal server before anything reaches a pool:

1. `detect` sniffs the real format from magic bytes, with our own code: QEMU's format probing is
   never used (a raw file that looks like a qcow2 header must not be opened as one), and a file that
   is no disk image at all (a text file named `.qcow2`, `/etc/shadow`) is refused.
2. `probe` runs `qemu-img info` with that explicit format, under CPU and memory limits (a crafted
   header must not eat the server), and refuses what could reach outside the file: backing files
   (local paths, `nbd://`, `http://`), external data files, VMDK descriptors and extents other than
   the file itself, as well as corrupt images and absurd virtual sizes.
3. `convert` writes a standalone qcow2 with `qemu-img convert`, reporting progress, and probes the
   result again.

Everything raises portal.exceptions.ValidationFailed with a message a user can act on; host paths
are named only in `detail` (for administrators and logs).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import struct
import subprocess
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import defusedxml
import defusedxml.ElementTree as SafeET
from django.conf import settings

from portal.exceptions import ValidationFailed

FORMATS = ("qcow2", "raw", "vmdk", "vdi", "vhdx", "iso")
CONTAINERS = ("ova",)
Progress = Callable[[float], None]

# qemu-img reads untrusted headers: cap its address space and CPU time (OpenStack does the same
# after CVE-2015-5162), and give up on it after a wall-clock timeout.
QEMU_IMG_LIMITS = ["prlimit", "--as=1073741824", "--cpu=30", "--"]
PROBE_TIMEOUT = 60
VMDK_SUBFORMATS = {"monolithicSparse", "streamOptimized"}
QCOW2_EXTERNAL_DATA_FILE = 1 << 2  # incompatible feature bit


@dataclass(frozen=True)
class Probe:
    """What qemu-img says about a file read with an explicit format."""

    format: str
    virtual_size: int
    actual_size: int


def _refuse(message: str, *, detail: str = "", field: str = "file") -> ValidationFailed:
    exc = ValidationFailed(message, field=field)
    if detail:
        exc.detail = detail
    return exc


def _read_at(fh: BinaryIO, offset: int, size: int) -> bytes:
    fh.seek(offset)
    return fh.read(size)


def detect(path: str) -> str:
    """The real format of `path` (one of FORMATS, or "ova"), from its magic bytes.

    A raw file is accepted only when it looks like a disk: an MBR or GPT partition table, or an
    ext2/3/4 or XFS file system at its start. Anything else is refused as "not a disk image".
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = _read_at(fh, 0, 4096)
            iso = _read_at(fh, 32769, 5)
    except OSError as exc:
        raise _refuse("The file cannot be read.", detail=f"{path}: {exc}") from None
    if size == 0:
        raise _refuse("The file is empty.")
    if head.startswith(b"QFI\xfb"):
        return "qcow2"
    if head.startswith(b"KDMV"):
        return "vmdk"
    if head.startswith(b"# Disk DescriptorFile") or b"createType=" in head[:1024]:
        raise _refuse("VMDK descriptor files are refused: they point at other files. Export the disk as a "
                      "single-file VMDK (monolithicSparse or streamOptimized) or as qcow2.")
    if head.startswith(b"vhdxfile"):
        return "vhdx"
    if len(head) >= 68 and struct.unpack_from("<I", head, 64)[0] == 0xBEDA107F:
        return "vdi"
    if head.startswith(b"conectix"):
        raise _refuse("VHD (Virtual PC) images are not supported; convert them to VHDX or qcow2.")
    if iso == b"CD001":
        return "iso"
    if len(head) >= 512 and head[257:262] == b"ustar":
        return "ova"
    if len(head) >= 512 and head[510:512] == b"\x55\xaa":
        return "raw"  # an MBR (or the protective MBR of a GPT disk)
    if head[512:520] == b"EFI PART":
        return "raw"
    if len(head) >= 1082 and head[1080:1082] == b"\x53\xef":
        return "raw"  # an ext2/3/4 file system without partition table
    if head.startswith(b"XFSB"):
        return "raw"
    raise _refuse("This file is not a disk image (qcow2, raw disk, VMDK, VDI, VHDX, ISO or OVA).")


def check_declared(detected: str, declared: str | None) -> None:
    """A format the user named must be the real one: never convert a file as something it is not."""
    if not declared:
        return
    declared = declared.lower().strip()
    if declared not in FORMATS + CONTAINERS:
        raise ValidationFailed(f"Unknown image format {declared[:20]!r}; known: {', '.join(FORMATS + CONTAINERS)}.",
                               field="format")
    if declared != detected:
        raise ValidationFailed(f"The file was declared as {declared} but is {detected}; "
                               "name the right format or leave it out.", field="format")


def _qcow2_header_check(path: str) -> None:
    """Refuse a qcow2 with a backing file or an external data file before qemu-img opens it."""
    with open(path, "rb") as fh:
        header = _read_at(fh, 0, 104)
    if len(header) < 72:
        raise _refuse("The qcow2 image is truncated (its header is incomplete).")
    version, backing_offset = struct.unpack_from(">IQ", header, 4)
    if backing_offset:
        raise _refuse("Images with a backing file are refused: the image must stand alone "
                      "(qemu-img convert -O qcow2 flattens it).")
    if version >= 3 and len(header) >= 80:
        incompatible = struct.unpack_from(">Q", header, 72)[0]
        if incompatible & QCOW2_EXTERNAL_DATA_FILE:
            raise _refuse("qcow2 images with an external data file are refused: the image must stand alone.")


def _qemu_img(args: list[str], *, timeout: float = PROBE_TIMEOUT) -> str:
    cmd = [*QEMU_IMG_LIMITS, "qemu-img", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise _refuse("Reading the image took too long; it is refused.", detail=" ".join(cmd)) from None
    if done.returncode != 0:
        raise _refuse("The image is corrupt or truncated and cannot be read.",
                      detail=(done.stderr or done.stdout).strip()[-2000:])
    return done.stdout


def probe(path: str, fmt: str) -> Probe:
    """`qemu-img info` with the format given explicitly, and the refusals listed in the module doc."""
    if fmt not in FORMATS:
        raise ValidationFailed(f"Unknown image format {fmt[:20]!r}.", field="format")
    size = os.path.getsize(path)
    if size > settings.IMAGE_MAX_BYTES:
        raise _refuse(f"The file is {size} bytes; the limit is {settings.IMAGE_MAX_BYTES} bytes.")
    qemu_fmt = "raw" if fmt == "iso" else fmt
    if fmt == "qcow2":
        _qcow2_header_check(path)
    info = json.loads(_qemu_img(["info", "--output=json", "-f", qemu_fmt, path]))
    if info.get("format") != qemu_fmt:
        raise _refuse(f"The image is not a valid {fmt} file.")
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise _refuse("Images with a backing file are refused: the image must stand alone.",
                      detail=str(info.get("backing-filename")))
    specific = (info.get("format-specific") or {}).get("data") or {}
    if specific.get("data-file"):
        raise _refuse("qcow2 images with an external data file are refused: the image must stand alone.")
    if specific.get("corrupt"):
        raise _refuse("The qcow2 image is marked corrupt.")
    if fmt == "vmdk":
        kind = specific.get("create-type", "")
        if kind not in VMDK_SUBFORMATS:
            raise _refuse(f"VMDK images of type {kind or 'unknown'!r} are refused; use a single-file "
                          "monolithicSparse or streamOptimized VMDK.")
        own = os.path.basename(path)
        for extent in specific.get("extents") or []:
            if os.path.basename(str(extent.get("filename", ""))) != own:
                raise _refuse("This VMDK refers to other files (extents); it is refused.",
                              detail=str(extent.get("filename")))
    virtual = int(info.get("virtual-size") or 0)
    if virtual <= 0:
        raise _refuse("The image has no size.")
    if virtual > settings.IMAGE_MAX_VIRTUAL_BYTES:
        raise _refuse(f"The image's virtual size is {virtual} bytes; the limit is "
                      f"{settings.IMAGE_MAX_VIRTUAL_BYTES} bytes.")
    if fmt == "vdi":
        _vdi_length_check(path)
    if fmt in {"qcow2", "vdi", "vhdx", "vmdk"}:
        _check(path, qemu_fmt)
    return Probe(format=fmt, virtual_size=virtual, actual_size=int(info.get("actual-size") or size))


def _vdi_length_check(path: str) -> None:
    """A VDI whose allocated blocks reach past the end of the file was cut short (qemu-img check does
    not look at the length, and reading would silently give zeros)."""
    with open(path, "rb") as fh:
        header = _read_at(fh, 0, 392)
    if len(header) < 392:
        raise _refuse("The VDI image is truncated (its header is incomplete).")
    offset_data = struct.unpack_from("<I", header, 344)[0]
    block_size, _extra, _blocks, allocated = struct.unpack_from("<IIII", header, 376)
    if os.path.getsize(path) < offset_data + allocated * block_size:
        raise _refuse("The VDI image is truncated: its blocks reach past the end of the file.")


def _check(path: str, fmt: str) -> None:
    """`qemu-img check`: refuses images whose metadata is inconsistent or that end early."""
    cmd = [*QEMU_IMG_LIMITS, "qemu-img", "check", "-q", "-f", fmt, path]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT * 5,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise _refuse("Checking the image took too long; it is refused.") from None
    # 0: clean; 3: leaked clusters only (harmless, convert drops them); 63: check not supported.
    if done.returncode not in (0, 3, 63):
        raise _refuse("The image is corrupt or truncated (qemu-img check found errors).",
                      detail=(done.stderr or done.stdout).strip()[-2000:])


PROGRESS_RE = re.compile(r"\((\d+(?:\.\d+)?)/100%\)")


def convert(src: str, src_fmt: str, dest: str, *, progress: Progress | None = None,
            max_bytes: int | None = None) -> Probe:
    """Write `src` (read as `src_fmt`) to `dest` as a standalone qcow2 and probe the result.

    Progress (0–100) comes from qemu-img's own `-p` output. `max_bytes`: qemu-img may write no larger
    file (prlimit --fsize; what the probed virtual size allows). A failure removes `dest`."""
    qemu_fmt = "raw" if src_fmt == "iso" else src_fmt
    cmd = ["qemu-img", "convert", "-p", "-f", qemu_fmt, "-O", "qcow2", "-o", "compat=1.1", src, dest]
    if max_bytes is not None:
        cmd = ["prlimit", f"--fsize={max(1, int(max_bytes))}", "--", *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stderr is not None
    buffer = b""
    last = -1.0
    try:
        while chunk := proc.stdout.read1(4096):  # type: ignore[attr-defined]
            buffer += chunk
            *lines, buffer = re.split(rb"[\r\n]", buffer)
            for line in lines:
                match = PROGRESS_RE.search(line.decode(errors="replace"))
                if match and progress is not None:
                    value = float(match[1])
                    if value - last >= 1 or value >= 100:
                        last = value
                        progress(value)
        err = proc.stderr.read().decode(errors="replace")
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        _remove(dest)
        raise
    if rc != 0:
        _remove(dest)
        if max_bytes is not None and (rc == -signal.SIGXFSZ or "File too large" in err):
            raise _refuse("The converted image grew larger than its virtual size allows; it is refused.",
                          detail=err.strip()[-2000:])
        raise _refuse("The image could not be converted; it is corrupt or truncated.", detail=err.strip()[-2000:])
    return probe(dest, "qcow2")


def sha256_file(path: str, *, progress: Progress | None = None) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks (progress 0–100 by bytes read)."""
    digest = hashlib.sha256()
    total = os.path.getsize(path) or 1
    done = 0
    last = -1
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
            done += len(block)
            if progress is not None and (percent := done * 100 // total) != last:
                last = percent
                progress(float(percent))
    return digest.hexdigest()


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --- OVA appliances --------------------------------------------------------------------------

@dataclass(frozen=True)
class OvfDisk:
    """A disk of an appliance: the member file holding it, its capacity and its format."""

    file: str
    capacity_bytes: int
    fmt: str


@dataclass(frozen=True)
class Appliance:
    """What an OVF descriptor asks for (checked against the portal's per-VM limits)."""

    name: str
    vcpus: int
    memory_mib: int
    disks: tuple[OvfDisk, ...]
    nics: int
    os: str


OVF_MAX_BYTES = 4 * 1024 * 1024
OVA_MAX_MEMBERS = 64
_UNITS = re.compile(r"^\s*byte\s*(?:\*\s*(\d{1,3})\s*\^\s*(\d{1,3}))?\s*$", re.I)
# The powers an OVF may scale bytes by: binary ones up to 2^60 (EiB) and decimal ones up to 10^18 (EB).
# Anything else (`byte * 9^999999999`) is refused before any arithmetic.
_UNIT_MAX_EXPONENT = {2: 60, 10: 18}
OVF_MAX_NUMBER = 2**63  # no count, capacity or quantity of an OVF is larger (libvirt's sizes are 64-bit)
SAFE_MEMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _attr(el: ET.Element, name: str) -> str:
    for key, value in el.attrib.items():
        if _local(key) == name:
            return value
    return ""


def _units(text: str, default: int) -> int:
    """OVF allocation units like "byte * 2^20" as a multiplier (bytes)."""
    if not text:
        return default
    match = _UNITS.match(text)
    if not match:
        raise _refuse(f"The OVF uses unknown allocation units {text[:40]!r}.")
    if match[1] is None:
        return 1
    base, exponent = int(match[1]), int(match[2])
    if base not in _UNIT_MAX_EXPONENT or exponent > _UNIT_MAX_EXPONENT[base]:
        raise _refuse(f"The OVF uses unsupported allocation units {text[:40]!r}; the portal reads "
                      "\"byte\", \"byte * 2^N\" (N up to 60) and \"byte * 10^N\" (N up to 18).")
    return base**exponent


def _int(text: str | None, what: str) -> int:
    """A whole number from 0 to OVF_MAX_NUMBER (checked before anything multiplies it)."""
    raw = str(text).strip() if text is not None else ""
    if len(raw) > 20:  # more digits than 2^63 has: refused without converting
        raise _refuse(f"The OVF's {what} is out of range.")
    try:
        value = int(raw)
    except ValueError:
        raise _refuse(f"The OVF gives no valid {what}.") from None
    if not 0 <= value <= OVF_MAX_NUMBER:
        raise _refuse(f"The OVF's {what} is out of range.")
    return value


def ovf_parse(data: bytes) -> Appliance:
    """Parse an OVF descriptor (namespace-agnostic) and check what it asks for against VM_LIMITS."""
    if len(data) > OVF_MAX_BYTES:
        raise _refuse("The OVF descriptor is too large.")
    try:
        # defusedxml: DTDs (and so entities, in any encoding: a byte check misses UTF-16) are refused.
        root = SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException:
        raise _refuse("OVF descriptors with a DOCTYPE or entities are refused.") from None
    except (ET.ParseError, ValueError) as exc:
        raise _refuse(f"The OVF descriptor is not valid XML ({str(exc)[:200]}).") from None
    if _local(root.tag) != "Envelope":
        raise _refuse("The OVF descriptor has no Envelope.")
    files = {_attr(f, "id"): _attr(f, "href") for f in root.iter() if _local(f.tag) == "File"}
    disks: dict[str, OvfDisk] = {}
    for disk in (d for d in root.iter() if _local(d.tag) == "Disk"):
        href = files.get(_attr(disk, "fileRef"), "")
        if not href:
            raise _refuse("An OVF disk refers to no file of the appliance.")
        capacity = _int(_attr(disk, "capacity"), "disk capacity") * _units(
            _attr(disk, "capacityAllocationUnits"), 1)
        if capacity > OVF_MAX_NUMBER:
            raise _refuse("An OVF disk's capacity is out of range.")
        fmt_uri = _attr(disk, "format").lower()
        fmt = "vmdk" if "vmdk" in fmt_uri else "qcow2" if "qcow" in fmt_uri else "raw" if "raw" in fmt_uri else ""
        disks[_attr(disk, "diskId")] = OvfDisk(file=href, capacity_bytes=capacity, fmt=fmt)
    systems = [s for s in root.iter() if _local(s.tag) == "VirtualSystem"]
    if len(systems) != 1:
        raise _refuse("The OVF must describe exactly one virtual machine.")
    system = systems[0]
    name = next((el.text or "" for el in system if _local(el.tag) == "Name"), "") or _attr(system, "id")
    os_name = ""
    for section in (s for s in system.iter() if _local(s.tag) == "OperatingSystemSection"):
        os_name = next((el.text or "" for el in section if _local(el.tag) == "Description"), "") or _attr(section, "osType")
    vcpus = memory_mib = nics = 0
    ordered: list[OvfDisk] = []
    for item in (i for i in system.iter() if _local(i.tag) in {"Item", "StorageItem", "EthernetPortItem"}):
        fields = {_local(el.tag): (el.text or "").strip() for el in item}
        kind = fields.get("ResourceType", "")
        if kind == "3":
            vcpus = _int(fields.get("VirtualQuantity"), "CPU count")
        elif kind == "4":
            quantity = _int(fields.get("VirtualQuantity"), "memory size")
            memory_mib = quantity * _units(fields.get("AllocationUnits", ""), 1024**2) // 1024**2
        elif kind == "10":
            nics += 1
        elif kind == "17":
            ref = fields.get("HostResource", "").rsplit("/", 1)[-1]
            if ref in disks and disks[ref] not in ordered:
                ordered.append(disks[ref])
    ordered += [d for d in disks.values() if d not in ordered]
    low, high = settings.VM_LIMITS["vcpus"]
    if not low <= vcpus <= high:
        raise _refuse(f"The appliance asks for {vcpus} CPUs; a VM has {low} to {high}.")
    low, high = settings.VM_LIMITS["memory_mib"]
    if not low <= memory_mib <= high:
        raise _refuse(f"The appliance asks for {memory_mib} MiB of memory; a VM has {low} to {high} MiB.")
    if not ordered:
        raise _refuse("The appliance has no disk.")
    if len(ordered) > 8:
        raise _refuse("The appliance has more than 8 disks.")
    return Appliance(name=name.strip()[:100], vcpus=vcpus, memory_mib=memory_mib, disks=tuple(ordered),
                     nics=nics, os=os_name.strip()[:100])


def ova_extract(path: str, dest_dir: str) -> tuple[Appliance, list[str]]:
    """Unpack an OVA (a tar of an OVF descriptor and its disk files) into `dest_dir` and read it.

    Only plain files with plain names are taken (no directories, links, devices, absolute or `..`
    names), never more bytes than IMAGE_MAX_BYTES in all; nothing is written outside `dest_dir`.
    Returns the appliance and its disk files' paths in the OVF's order."""
    os.makedirs(dest_dir, exist_ok=True)
    budget = settings.IMAGE_MAX_BYTES
    try:
        archive = tarfile.open(path, mode="r:")
    except (tarfile.TarError, OSError):
        raise _refuse("The OVA is not a valid tar archive.") from None
    written: dict[str, str] = {}
    seen: set[str] = set()
    ovf: bytes | None = None
    with archive:
        try:
            for count, member in enumerate(archive):
                if count >= OVA_MAX_MEMBERS:
                    raise _refuse("The OVA has too many members.")
                if not member.isfile():
                    raise _refuse(f"The OVA member {member.name[:80]!r} is not a plain file; it is refused.")
                name = member.name
                if not SAFE_MEMBER.match(name):
                    raise _refuse(f"The OVA member name {name[:80]!r} is unsafe (paths and links are refused).")
                if name in seen:
                    raise _refuse(f"The OVA holds two members named {name[:80]!r}; it is refused.")
                seen.add(name)
                if member.size > budget:
                    raise _refuse("The OVA's files are larger than the image size limit.")
                budget -= member.size
                source = archive.extractfile(member)
                assert source is not None
                if name.lower().endswith(".ovf"):
                    if ovf is not None:
                        raise _refuse("The OVA has more than one OVF descriptor.")
                    ovf = source.read(OVF_MAX_BYTES + 1)
                    continue
                if name.lower().endswith((".mf", ".cert")):
                    continue  # manifest and certificate: not needed
                target = os.path.join(dest_dir, name)
                with open(target, "xb") as out:
                    while block := source.read(1 << 20):
                        out.write(block)
                written[name] = target
        except tarfile.TarError:
            raise _refuse("The OVA is truncated or corrupt.") from None
    if ovf is None:
        raise _refuse("The OVA has no OVF descriptor.")
    appliance = ovf_parse(ovf)
    paths = []
    for disk in appliance.disks:
        if disk.file not in written:
            raise _refuse(f"The OVF names the disk file {disk.file[:80]!r}, which the OVA does not contain.")
        paths.append(written[disk.file])
    return appliance, paths
