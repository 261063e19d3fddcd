"""DomainSpec -> libvirt XML and back: pure functions over ElementTree, never string formatting."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from .types import (
    METADATA_NS,
    CdromSpec,
    DhcpHost,
    DiskInfo,
    DiskSpec,
    DomainDefinition,
    DomainSpec,
    InterfaceInfo,
    NetworkSpec,
    NicSpec,
    PowerState,
    SnapshotInfo,
)

ET.register_namespace("portal", METADATA_NS)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def build_domain_xml(spec: DomainSpec) -> str:
    """Render a DomainSpec; every user-supplied string goes through ElementTree's escaping."""
    dom = ET.Element("domain", {"type": spec.domain_type})
    _sub(dom, "name", spec.name)
    _sub(dom, "uuid", spec.uuid)
    if spec.title:
        _sub(dom, "title", spec.title.replace("\n", " "))
    if spec.description:
        _sub(dom, "description", spec.description)
    if spec.metadata:
        meta = _sub(dom, "metadata")
        vm = ET.SubElement(meta, f"{{{METADATA_NS}}}vm")
        for key, value in sorted(spec.metadata.items()):
            item = ET.SubElement(vm, f"{{{METADATA_NS}}}{key}")
            item.text = value
    _sub(dom, "memory", str(spec.memory_mib), unit="MiB")
    _sub(dom, "currentMemory", str(spec.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(spec.vcpus), placement="static")

    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch=spec.arch, machine=spec.machine)
    if spec.kernel:
        _sub(os_el, "kernel", spec.kernel)
        if spec.initrd:
            _sub(os_el, "initrd", spec.initrd)
        if spec.cmdline:
            _sub(os_el, "cmdline", spec.cmdline)
    elif not _has_boot_order(spec):  # libvirt refuses <os><boot dev> beside per-device boot orders
        if spec.cdroms:
            _sub(os_el, "boot", dev="cdrom")  # CD first: an ISO install; an empty tray falls through
        _sub(os_el, "boot", dev="hd")

    features = _sub(dom, "features")
    _sub(features, "acpi")  # required for ACPI shutdown (the power button)
    _sub(features, "apic")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")

    devices = _sub(dom, "devices")
    for disk in spec.disks:
        devices.append(_disk_element(disk))
    for cdrom in spec.cdroms:
        devices.append(_cdrom(cdrom))
    if any(disk.bus == "scsi" for disk in spec.disks) or spec.domain_type != "test":
        _sub(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    for nic in spec.nics:
        devices.append(_interface(nic))
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "target", port="0")
    if spec.serial_log:
        _sub(serial, "log", file=spec.serial_log, append="off")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    if spec.graphics:
        attrs = {"type": "vnc", "port": "-1", "autoport": "yes", "listen": spec.graphics_listen}
        if spec.graphics_password:
            attrs["passwd"] = spec.graphics_password
        g = _sub(devices, "graphics", **attrs)
        _sub(g, "listen", type="address", address=spec.graphics_listen)
        video = _sub(devices, "video")
        _sub(video, "model", type="vga")
    if spec.domain_type != "test":
        balloon = _sub(devices, "memballoon", model="virtio")
        _sub(balloon, "stats", period="5")
    return ET.tostring(dom, encoding="unicode")


def _disk_element(disk: DiskSpec) -> ET.Element:
    """One <disk> of a DiskSpec, with its validated device properties (vms.properties)."""
    d = ET.Element("disk", {"type": "file", "device": disk.device})
    if disk.readonly:
        d.set("snapshot", "no")  # a read-only disk (the cloud-init seed, a shared disk) has nothing to snapshot
    # Format is always explicit: never let QEMU probe a guest-writable image.
    driver = _sub(d, "driver", name="qemu", type=disk.format)
    for attr in ("cache", "io", "discard", "detect_zeroes"):
        value = getattr(disk, attr)
        if value:
            driver.set(attr, value)
    _sub(d, "source", file=disk.path)
    _sub(d, "target", dev=disk.target, bus=disk.bus)
    if disk.iotune:
        iotune = _sub(d, "iotune")
        for key, number in disk.iotune:
            _sub(iotune, key, str(int(number)))
    if disk.boot_order:
        _sub(d, "boot", order=str(int(disk.boot_order)))
    if disk.readonly:
        _sub(d, "readonly")
    if disk.shareable:
        _sub(d, "shareable")  # several domains may open it (always read-only: vms.disks)
    if disk.serial:
        _sub(d, "serial", disk.serial)
    return d


def _has_boot_order(spec: DomainSpec) -> bool:
    return any(d.boot_order for d in spec.disks) or any(n.boot_order for n in spec.nics)


def parse_metadata(xml: str) -> dict[str, str] | None:
    """Our <portal:vm> metadata from a domain's XML, or None for domains the portal did not create."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    vm = root.find(f"metadata/{{{METADATA_NS}}}vm")
    if vm is None:
        return None
    return {child.tag.rsplit("}", 1)[-1]: (child.text or "") for child in vm}


def metadata_fragment(metadata: dict[str, str]) -> str:
    """Our metadata as the XML fragment virDomainSetMetadata takes: `<vm><key>value</key>…</vm>`,
    without a namespace (libvirt puts the element and its children in METADATA_NS itself)."""
    vm = ET.Element("vm")
    for key, value in sorted(metadata.items()):
        ET.SubElement(vm, key).text = value
    return ET.tostring(vm, encoding="unicode")


_MEMORY_UNITS_TO_KIB = {
    "b": 1 / 1024, "bytes": 1 / 1024, "kb": 1000 / 1024, "k": 1, "kib": 1, "mb": 1000**2 / 1024, "m": 1024,
    "mib": 1024, "gb": 1000**3 / 1024, "g": 1024**2, "gib": 1024**2, "tb": 1000**4 / 1024, "t": 1024**3,
    "tib": 1024**3,
}


def _memory_mib(el: ET.Element | None) -> int:
    if el is None or not (el.text or "").strip():
        return 0
    factor = _MEMORY_UNITS_TO_KIB.get((el.get("unit") or "KiB").lower(), 1)
    return int(int(el.text.strip()) * factor) // 1024  # type: ignore[union-attr]


def _disk(d: ET.Element) -> DiskInfo:
    source_type = d.get("type") or "file"
    source = d.find("source")
    driver = d.find("driver")
    target = d.find("target")
    path = pool = volume = None
    if source is not None:
        if source_type == "file":
            path = source.get("file")
        elif source_type == "block":
            path = source.get("dev")
        elif source_type == "dir":
            path = source.get("dir")
        elif source_type == "volume":
            pool, volume = source.get("pool"), source.get("volume")
    backing = d.find("backingStore/source")
    return DiskInfo(
        target=target.get("dev", "") if target is not None else "",
        bus=(target.get("bus") or "") if target is not None else "",
        device=d.get("device") or "disk",
        source_type=source_type,
        path=path,
        format=driver.get("type") if driver is not None else None,
        readonly=d.find("readonly") is not None,
        pool=pool,
        volume=volume,
        backing_path=(backing.get("file") or backing.get("dev")) if backing is not None else None,
    )


def parse_definition(xml: str, *, state: PowerState, persistent: bool) -> DomainDefinition:
    """A domain's definition as typed values: sizes, disks, NICs, boot, our metadata (for adoption)."""
    root = ET.fromstring(xml)
    vcpu = root.find("vcpu")
    memory = root.find("memory")
    os_type = root.find("os/type")
    return DomainDefinition(
        name=root.findtext("name") or "",
        uuid=root.findtext("uuid") or "",
        title=(root.findtext("title") or "").strip(),
        description=root.findtext("description") or "",
        domain_type=root.get("type") or "",
        vcpus=int((vcpu.text or "1").strip()) if vcpu is not None else 1,
        memory_mib=_memory_mib(memory),
        state=state,
        persistent=persistent,
        kernel_boot=bool((root.findtext("os/kernel") or "").strip()),
        machine=(os_type.get("machine") or "") if os_type is not None else "",
        disks=tuple(_disk(d) for d in root.findall("devices/disk")),
        nics=tuple(parse_interfaces(xml)),
        metadata=parse_metadata(xml),
    )


def pool_target_path(xml: str) -> tuple[str, str]:
    """(type, target path) of a storage pool's XML."""
    root = ET.fromstring(xml)
    return root.get("type") or "", (root.findtext("target/path") or "").strip()


def graphics_endpoint(xml: str) -> tuple[str, int, str | None] | None:
    """(listen address, port, password) of a running domain's VNC server, from its live XML."""
    root = ET.fromstring(xml)
    g = root.find("devices/graphics[@type='vnc']")
    if g is None:
        return None
    port = int(g.get("port", "-1"))
    if port <= 0:
        return None
    listen = g.get("listen") or "127.0.0.1"
    return listen, port, g.get("passwd")


def disk_paths(xml: str) -> list[str]:
    root = ET.fromstring(xml)
    return [f for s in root.findall("devices/disk/source") if (f := s.get("file"))]


def _cdrom(cdrom: CdromSpec) -> ET.Element:
    # snapshot="no": read-only media has nothing to snapshot (and libvirt compares this attribute
    # when media changes, so the same element serves define and updateDeviceFlags).
    d = ET.Element("disk", {"type": "file", "device": "cdrom", "snapshot": "no"})
    _sub(d, "driver", name="qemu", type=cdrom.format)  # explicit format, never probed
    if cdrom.path:
        _sub(d, "source", file=cdrom.path)
    _sub(d, "target", dev=cdrom.target, bus=cdrom.bus)
    _sub(d, "readonly")
    return d


def cdrom_xml(cdrom: CdromSpec) -> str:
    """One CD-ROM <disk>, for updateDeviceFlags (insert: with a source; eject: without)."""
    return ET.tostring(_cdrom(cdrom), encoding="unicode")


def parse_cdroms(xml: str) -> list[CdromSpec]:
    """The CD-ROM drives of a domain's XML and their media (path None: empty tray)."""
    root = ET.fromstring(xml)
    out = []
    for d in root.findall("devices/disk[@device='cdrom']"):
        target = d.find("target")
        source = d.find("source")
        driver = d.find("driver")
        out.append(CdromSpec(
            target=(target.get("dev") or "") if target is not None else "",
            bus=(target.get("bus") or "ide") if target is not None else "ide",
            path=(source.get("file") or None) if source is not None else None,
            format=(driver.get("type") or "raw") if driver is not None else "raw",
        ))
    return out


def boot_order(xml: str) -> list[str]:
    """The firmware boot devices in order (<os><boot dev=...>), e.g. ["cdrom", "hd"]."""
    root = ET.fromstring(xml)
    return [b.get("dev") or "" for b in root.findall("os/boot")]


def set_cdrom_media(xml: str, cdrom: CdromSpec) -> str:
    """The domain XML with the drive at `cdrom.target` holding `cdrom.path` (None: empty): for
    drivers that cannot update a device, the definition is written again with it."""
    root = ET.fromstring(xml)
    for d in root.findall("devices/disk[@device='cdrom']"):
        target = d.find("target")
        if target is None or target.get("dev") != cdrom.target:
            continue
        source = d.find("source")
        if source is not None:
            d.remove(source)
        if cdrom.path:
            new = ET.Element("source", {"file": cdrom.path})
            driver = d.find("driver")
            d.insert(list(d).index(driver) + 1 if driver is not None else 0, new)
        return ET.tostring(root, encoding="unicode")
    raise KeyError(cdrom.target)


def add_cdrom(xml: str, cdrom: CdromSpec) -> str:
    """The domain XML with one more CD-ROM drive (after its other disks), everything else as it was:
    for drivers that cannot attach a device to a definition."""
    root = ET.fromstring(xml)
    devices = root.find("devices")
    if devices is None:
        devices = ET.SubElement(root, "devices")
    children = list(devices)
    disks = [i for i, child in enumerate(children) if child.tag == "disk"]
    devices.insert(disks[-1] + 1 if disks else 0, _cdrom(cdrom))
    return ET.tostring(root, encoding="unicode")


def title_of(xml: str) -> str:
    root = ET.fromstring(xml)
    return (root.findtext("title") or "").strip()


def volume_xml(*, name: str, capacity_bytes: int, fmt: str = "qcow2",
               backing_path: str | None = None, backing_format: str = "qcow2") -> str:
    vol = ET.Element("volume")
    _sub(vol, "name", name)
    _sub(vol, "capacity", str(capacity_bytes), unit="bytes")
    target = _sub(vol, "target")
    _sub(target, "format", type=fmt)
    if fmt == "qcow2":
        _sub(target, "compat", "1.1")
    if backing_path:
        backing = _sub(vol, "backingStore")
        _sub(backing, "path", backing_path)
        _sub(backing, "format", type=backing_format)
    return ET.tostring(vol, encoding="unicode")


def pool_xml(*, name: str, path: str) -> str:
    pool = ET.Element("pool", {"type": "dir"})
    _sub(pool, "name", name)
    target = _sub(pool, "target")
    _sub(target, "path", path)
    return ET.tostring(pool, encoding="unicode")


def volume_format(xml: str) -> tuple[str, str | None]:
    root = ET.fromstring(xml)
    fmt_el = root.find("target/format")
    fmt = fmt_el.get("type") if fmt_el is not None else "raw"
    backing = root.findtext("backingStore/path")
    return fmt or "raw", backing


def snapshot_xml(*, name: str, description: str, with_memory: bool) -> str:
    """An internal snapshot (inside the qcow2 disks); with the RAM when the domain is running."""
    root = ET.Element("domainsnapshot")
    _sub(root, "name", name)
    if description:
        _sub(root, "description", description)
    if with_memory:
        _sub(root, "memory", snapshot="internal")
    return ET.tostring(root, encoding="unicode")


_SNAPSHOT_STATE = {
    "running": PowerState.RUNNING, "blocked": PowerState.BLOCKED, "paused": PowerState.PAUSED,
    "shutdown": PowerState.SHUTTING_DOWN, "shutoff": PowerState.SHUTOFF, "crashed": PowerState.CRASHED,
    "pmsuspended": PowerState.PMSUSPENDED, "disk-snapshot": PowerState.SHUTOFF,
}


def parse_snapshot(xml: str) -> SnapshotInfo:
    root = ET.fromstring(xml)
    memory = root.find("memory")
    state = _SNAPSHOT_STATE.get(root.findtext("state") or "", PowerState.NOSTATE)
    has_memory = memory is not None and memory.get("snapshot") in ("internal", "external")
    return SnapshotInfo(
        name=root.findtext("name") or "",
        description=root.findtext("description") or "",
        state=state,
        has_memory=has_memory and state.is_active,
        created_at=int(root.findtext("creationTime") or 0),
    )


# --- networks and NICs ----------------------------------------------------------------------------

def _interface(nic: NicSpec) -> ET.Element:
    i = ET.Element("interface", {"type": "network"})
    if nic.mac:
        _sub(i, "mac", address=nic.mac)
    _sub(i, "source", network=nic.network)
    _sub(i, "model", type=nic.model)
    if nic.boot_order:
        _sub(i, "boot", order=str(int(nic.boot_order)))
    return i


def interface_xml(nic: NicSpec) -> str:
    """One <interface> device, for attachDeviceFlags / detachDeviceFlags."""
    return ET.tostring(_interface(nic), encoding="unicode")


def parse_interfaces(xml: str) -> list[InterfaceInfo]:
    """The NICs of a domain's XML, in device order."""
    root = ET.fromstring(xml)
    out = []
    for i in root.findall("devices/interface"):
        mac = i.find("mac")
        source = i.find("source")
        model = i.find("model")
        out.append(InterfaceInfo(
            mac=(mac.get("address") or "").lower() if mac is not None else "",
            network=source.get("network") if source is not None else None,
            model=model.get("type") if model is not None else None,
            bridge=source.get("bridge") if source is not None else None,
            type=i.get("type") or "network",
        ))
    return out


def dhcp_host_xml(host: DhcpHost) -> str:
    attrs = {"mac": host.mac, "ip": host.ip}
    if host.name:
        attrs["name"] = host.name
    return ET.tostring(ET.Element("host", attrs), encoding="unicode")


def network_xml(spec: NetworkSpec) -> str:
    """A libvirt <network>: isolated (no <forward>), NAT, or bridged to an existing host bridge."""
    net = ET.Element("network")
    _sub(net, "name", spec.name)
    if spec.uuid:
        _sub(net, "uuid", spec.uuid)
    if spec.mode == "bridge":
        _sub(net, "forward", mode="bridge")
        _sub(net, "bridge", name=spec.bridge or "")
        return ET.tostring(net, encoding="unicode")
    if spec.mode == "nat":
        _sub(net, "forward", mode="nat")
    if spec.bridge:
        _sub(net, "bridge", name=spec.bridge, stp="on", delay="0")
    if spec.domain:
        _sub(net, "domain", name=spec.domain, localOnly="yes")
    if spec.dns_forwarders:
        dns = _sub(net, "dns")
        for addr in spec.dns_forwarders:
            _sub(dns, "forwarder", addr=addr)
    if spec.gateway and spec.prefix is not None:
        ip = _sub(net, "ip", address=spec.gateway, prefix=str(spec.prefix))
        if spec.dhcp_start and spec.dhcp_end or spec.hosts:
            dhcp = _sub(ip, "dhcp")
            if spec.dhcp_start and spec.dhcp_end:
                _sub(dhcp, "range", start=spec.dhcp_start, end=spec.dhcp_end)
            for host in spec.hosts:
                dhcp.append(ET.fromstring(dhcp_host_xml(host)))
    return ET.tostring(net, encoding="unicode")


def network_dhcp_hosts(xml: str) -> list[DhcpHost]:
    root = ET.fromstring(xml)
    return [DhcpHost(mac=(h.get("mac") or "").lower(), ip=h.get("ip") or "", name=h.get("name") or "")
            for h in root.findall("ip/dhcp/host")]


def network_shape(xml: str) -> tuple:
    """What defines a network apart from its reservations and the names libvirt fills in: two XMLs
    with the same shape need no redefinition (reservations are updated live instead)."""
    root = ET.fromstring(xml)
    forward = root.find("forward")
    ip = root.find("ip")
    rng = root.find("ip/dhcp/range")
    return (
        forward.get("mode") if forward is not None else None,
        (ip.get("address"), ip.get("prefix") or ip.get("netmask")) if ip is not None else None,
        (rng.get("start"), rng.get("end")) if rng is not None else None,
        root.find("bridge").get("name") if forward is not None and forward.get("mode") == "bridge" else None,  # type: ignore[union-attr]
        tuple(f.get("addr") for f in root.findall("dns/forwarder")),
    )



# --- live migration (issue #12) ------------------------------------------------------------------

def retarget_paths(xml: str, path_map: dict[str, str], *, graphics_listen: str | None = None) -> str:
    """The domain XML with the files it uses moved: each disk's `<source file>` and the `<kernel>` /
    `<initrd>` whose path is a key of `path_map` names the value instead; everything else unchanged
    (the destination's definition of a migrating domain whose files live elsewhere there)."""
    root = ET.fromstring(xml)
    for source in root.findall("devices/disk/source"):
        path = source.get("file")
        if path and path in path_map:
            source.set("file", path_map[path])
    for tag in ("os/kernel", "os/initrd"):
        el = root.find(tag)
        if el is not None and el.text and el.text.strip() in path_map:
            el.text = path_map[el.text.strip()]
    if graphics_listen:  # the display listens on the destination host's display address, not the source's
        for g in root.findall("devices/graphics[@type='vnc']"):
            g.set("listen", graphics_listen)
            for listen in g.findall("listen"):
                if listen.get("type") == "address":
                    listen.set("address", graphics_listen)
    return ET.tostring(root, encoding="unicode")


# --- storage domains (issue #11) ---

from .types import PoolSpec  # noqa: E402  (kept in this block: merged beside other helpers' blocks)


def pool_spec_xml(spec: PoolSpec) -> str:
    """A storage pool's XML: a dir pool, or a netfs pool mounted from `source_host:/source_dir`."""
    pool = ET.Element("pool", {"type": spec.type})
    _sub(pool, "name", spec.name)
    if spec.type == "netfs":
        source = _sub(pool, "source")
        _sub(source, "host", name=spec.source_host)
        _sub(source, "dir", path=spec.source_dir)
        _sub(source, "format", type=spec.source_format or "auto")
    target = _sub(pool, "target")
    _sub(target, "path", spec.path)
    return ET.tostring(pool, encoding="unicode")
# --- disks hot-plug (issue #11) ------------------------------------------------------------------
# One function builds a disk's <disk> element, for a whole domain (build_domain_xml) and for one device
# (attach/detach): the device properties (cache, io, serial, boot order, I/O limits) are added here too.

def disk_xml(disk: DiskSpec) -> str:
    """One <disk> device, for attachDeviceFlags."""
    return ET.tostring(_disk_element(disk), encoding="unicode")


def parse_disks(xml: str) -> list[DiskInfo]:
    """The disk devices (not CD-ROMs) of a domain's XML, in device order."""
    root = ET.fromstring(xml)
    return [_disk(d) for d in root.findall("devices/disk") if (d.get("device") or "disk") == "disk"]


def disk_device_xml(xml: str, target: str) -> str | None:
    """The <disk> element at `target` in a domain's XML, as libvirt wrote it (for detachDeviceFlags)."""
    root = ET.fromstring(xml)
    for d in root.findall("devices/disk"):
        t = d.find("target")
        if t is not None and t.get("dev") == target:
            return ET.tostring(d, encoding="unicode")
    return None


def add_disk(xml: str, disk: DiskSpec) -> str:
    """The domain XML with one more disk (after its other disks): for drivers without device attach."""
    root = ET.fromstring(xml)
    devices = root.find("devices")
    if devices is None:
        devices = ET.SubElement(root, "devices")
    children = list(devices)
    disks = [i for i, child in enumerate(children) if child.tag == "disk"]
    devices.insert(disks[-1] + 1 if disks else 0, _disk_element(disk))
    return ET.tostring(root, encoding="unicode")


def remove_disk(xml: str, target: str) -> str:
    """The domain XML without the disk at `target`: for drivers without device detach."""
    root = ET.fromstring(xml)
    devices = root.find("devices")
    for d in list(devices) if devices is not None else []:
        t = d.find("target")
        if d.tag == "disk" and t is not None and t.get("dev") == target:
            devices.remove(d)  # type: ignore[union-attr]
    return ET.tostring(root, encoding="unicode")
# --- device properties and snapshot space (issue #11) ---------------------------------------------

def snapshot_disk_paths(xml: str) -> list[str]:
    """Files of a domain's disks that internal snapshots live in: writable qcow2 file disks."""
    root = ET.fromstring(xml)
    out = []
    for d in root.findall("devices/disk[@device='disk']"):
        source, driver = d.find("source"), d.find("driver")
        if (d.get("type") or "file") != "file" or source is None or not source.get("file"):
            continue
        if d.find("readonly") is not None or d.get("snapshot") == "no":
            continue
        if driver is not None and (driver.get("type") or "qcow2") != "qcow2":
            continue
        out.append(source.get("file") or "")
    return out


# --- per-device boot order in a written definition (issue #11, trial finding 1) ---------------------

def drop_os_boot(xml: str) -> str:
    """The domain XML without <os><boot dev=...>: libvirt refuses them beside a per-device boot order
    (build_domain_xml leaves them out then, too)."""
    root = ET.fromstring(xml)
    os_el = root.find("os")
    for boot in list(os_el.findall("boot")) if os_el is not None else []:
        os_el.remove(boot)  # type: ignore[union-attr]
    return ET.tostring(root, encoding="unicode")
