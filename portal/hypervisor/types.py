"""Typed, frozen values that cross the gateway; no libvirt object or constant leaves portal.hypervisor."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

METADATA_NS = "https://vmportal.dev/xmlns/domain/1"


class PowerState(StrEnum):
    """What libvirt says a domain is doing."""

    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTTING_DOWN = "shutting_down"
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    PMSUSPENDED = "pmsuspended"
    NOSTATE = "nostate"

    @property
    def is_active(self) -> bool:
        return self not in {PowerState.SHUTOFF, PowerState.CRASHED, PowerState.NOSTATE}


@dataclass(frozen=True)
class DiskSpec:
    """A disk device. bus: "virtio" (virtio-blk) or "scsi" (on the domain's one virtio-SCSI controller).
    The optional fields are validated device properties (vms.properties): None leaves QEMU's default."""

    path: str
    target: str = "vda"
    bus: str = "virtio"
    format: str = "qcow2"
    device: str = "disk"
    readonly: bool = False
    shareable: bool = False
    cache: str | None = None  # none, writethrough, writeback, directsync, unsafe
    io: str | None = None  # threads, native, io_uring
    discard: str | None = None  # ignore, unmap
    detect_zeroes: str | None = None  # off, on, unmap
    serial: str | None = None
    boot_order: int | None = None
    iotune: tuple[tuple[str, int], ...] = ()  # (("total_iops_sec", 500), ...): libvirt's <iotune> elements


@dataclass(frozen=True)
class CdromSpec:
    """A CD-ROM drive and the media in it (`path` None: an empty tray). IDE on the `pc` machine, the
    bus every firmware and installer knows; IDE cannot be hot-plugged, so drives change only while
    the domain is off, and media change on a running one."""

    target: str = "hdc"
    bus: str = "ide"
    path: str | None = None
    format: str = "raw"


@dataclass(frozen=True)
class NicSpec:
    """A NIC on a libvirt network (`network` is the network's libvirt name on the domain's host)."""

    network: str
    mac: str | None = None
    model: str = "virtio"
    boot_order: int | None = None


@dataclass(frozen=True)
class DhcpHost:
    """A static DHCP reservation: this MAC always gets this address (and host name)."""

    mac: str
    ip: str
    name: str = ""


@dataclass(frozen=True)
class NetworkSpec:
    """A libvirt virtual network.

    mode: "isolated" (no <forward>: guests reach each other and the host's bridge address only),
    "nat" (libvirt's NAT to the host's uplinks), or "bridge" (guests join an existing host bridge;
    libvirt manages no addresses then). For isolated and NAT, libvirt runs dnsmasq on
    `gateway`/`prefix` (the host's address: any address of the subnet) with the DHCP range and
    reservations, forwarding guests' DNS queries to `dns_forwarders` when given.
    """

    name: str
    mode: str
    uuid: str | None = None
    bridge: str | None = None
    gateway: str | None = None
    prefix: int | None = None
    dhcp_start: str | None = None
    dhcp_end: str | None = None
    hosts: tuple[DhcpHost, ...] = ()
    domain: str | None = None
    dns_forwarders: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetworkInfo:
    name: str
    uuid: str
    active: bool
    autostart: bool
    bridge: str | None


@dataclass(frozen=True)
class Lease:
    """A DHCP lease libvirt's dnsmasq handed out on a network."""

    mac: str
    ip: str
    prefix: int
    hostname: str
    expires_at: int  # seconds since the epoch


@dataclass(frozen=True)
class InterfaceInfo:
    """A NIC as a domain's XML has it (live or persistent)."""

    mac: str
    network: str | None
    model: str | None
    bridge: str | None = None
    type: str = "network"  # libvirt's interface type: network, bridge, direct, user, ...


@dataclass(frozen=True)
class DiskInfo:
    """A disk device as a domain's XML has it (read for adoption).

    `source_type` is libvirt's disk type: "file", "block", "network", "volume" or "dir"; `path` is
    the file or block device (None for network sources and empty CD-ROM trays); `pool`/`volume` are
    given for `volume` sources. `format` is the driver's explicit type (None: not given).
    """

    target: str
    bus: str
    device: str
    source_type: str
    path: str | None
    format: str | None
    readonly: bool
    pool: str | None = None
    volume: str | None = None
    backing_path: str | None = None


@dataclass(frozen=True)
class DomainDefinition:
    """What a domain is (its persistent definition) and what it is doing: read for adoption."""

    name: str
    uuid: str
    title: str
    description: str
    domain_type: str
    vcpus: int
    memory_mib: int
    state: PowerState
    persistent: bool
    kernel_boot: bool
    disks: tuple[DiskInfo, ...] = ()
    machine: str = ""  # the machine type (<os><type machine=...>): pc-i440fx-…, pc-q35-…
    nics: tuple[InterfaceInfo, ...] = ()
    metadata: dict[str, str] | None = None


@dataclass(frozen=True)
class PoolInfo:
    """A libvirt storage pool: its name, type, where it keeps its volumes, and whether it runs."""

    name: str
    type: str
    path: str
    active: bool


@dataclass(frozen=True)
class DomainSpec:
    """Everything needed to define a domain; turned into XML by domain_xml.build_domain_xml."""

    name: str
    uuid: str
    vcpus: int
    memory_mib: int
    domain_type: str = "qemu"
    title: str = ""
    description: str = ""
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    # CD-ROM drives: with any, a firmware-booted domain boots from CD first, then from its disk
    # (an empty tray falls through to the disk); direct-kernel domains keep booting their kernel.
    cdroms: tuple[CdromSpec, ...] = ()
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    arch: str = "x86_64"
    machine: str = "pc"
    graphics: bool = True
    graphics_listen: str = "127.0.0.1"
    graphics_password: str | None = None
    serial_log: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DomainInfo:
    name: str
    uuid: str
    state: PowerState
    persistent: bool
    vcpus: int
    memory_kib: int
    title: str = ""
    metadata: dict[str, str] | None = None


@dataclass(frozen=True)
class DomainStats:
    """A running domain's cumulative counters and allotment, read with the bulk listing when asked
    (`list_domain_states(stats=True)`: libvirt's cpu-total, balloon, vcpu, interface and block groups in
    the same single call). Counters count from the domain's start; None where libvirt gave nothing."""

    domain_id: int = -1  # libvirt's id of the running domain: a new one means it was started again
    cpu_time_ns: int | None = None
    vcpus: int = 0
    balloon_current_kib: int | None = None  # memory the guest has now
    balloon_available_kib: int | None = None  # guest-reported (virtio balloon stats), if any
    balloon_unused_kib: int | None = None
    balloon_usable_kib: int | None = None
    rd_bytes: int = 0  # summed over the domain's disks
    wr_bytes: int = 0
    rx_bytes: int = 0  # summed over its interfaces
    tx_bytes: int = 0


@dataclass(frozen=True)
class DomainState:
    """One line of a host's bulk listing (`list_domain_states`): what reconcile needs of every domain,
    read for all of them at once. `reason` is libvirt's state reason code (an int, meaning per state);
    details (metadata, title, size, persistence) are `domain_info(uuid)`, asked only for the domains
    that need them."""

    name: str
    uuid: str
    state: PowerState
    reason: int = 0
    stats: DomainStats | None = None  # with list_domain_states(stats=True), for running domains


@dataclass
class CallCount:
    """libvirt calls made through one driver while `LibvirtDriver.counting_calls()` is on: the total and
    per method name. Calls libvirt answers locally (a domain's name, UUID, id) are not counted."""

    total: int = 0
    by_name: dict[str, int] = field(default_factory=dict)

    def add(self, name: str) -> None:
        self.total += 1
        self.by_name[name] = self.by_name.get(name, 0) + 1


@dataclass(frozen=True)
class HostInfo:
    hostname: str
    uri: str
    driver: str
    libvirt_version: str
    hypervisor_version: str
    arch: str
    cpus: int
    memory_mib: int
    free_memory_mib: int
    domain_types: tuple[str, ...]
    # The host's UUID from its capabilities ("" where none is given, as on the test driver); libvirt
    # refuses to migrate between two daemons that report the same one.
    uuid: str = ""
    # Load: domains running now, and the share of CPU time busy since the previous host_info() on this
    # connection (None on the first read or where libvirt gives no node CPU statistics).
    running_domains: int = 0
    cpu_usage_percent: float | None = None


@dataclass(frozen=True)
class VolumeInfo:
    pool: str
    name: str
    path: str
    capacity_bytes: int
    allocation_bytes: int
    format: str
    backing_path: str | None = None


@dataclass(frozen=True)
class Capabilities:
    """What a driver can do, so callers ask before they offer an action."""

    real_guests: bool
    console: bool
    graphics: bool
    acpi_shutdown: bool
    migration: bool
    memory_snapshots: bool
    live_disk_resize: bool
    events: bool
    storage_files: bool
    nic_hotplug: bool = False
    live_media_change: bool = False  # insert or eject a CD in a running domain
    # --- disks hot-plug (issue #11) ---
    disk_hotplug: bool = False  # attach or detach a disk in a running domain (and edit a definition's disks)


@dataclass(frozen=True)
class SnapshotInfo:
    """A domain snapshot: its name, the domain's state when taken, and whether it holds the RAM."""

    name: str
    description: str
    state: PowerState
    has_memory: bool
    created_at: int  # seconds since the epoch, from libvirt


@dataclass(frozen=True)
class LifecycleEvent:
    uuid: str
    name: str
    event: str
    detail: int
    state: PowerState


# --- live migration (issue #12) ------------------------------------------------------------------

@dataclass(frozen=True)
class MigrationProgress:
    """A migration under way, as the source's job statistics say (bytes; 0 when not known yet)."""

    elapsed_seconds: float
    data_total: int = 0
    data_processed: int = 0
    data_remaining: int = 0

    @property
    def percent(self) -> int:
        if not self.data_total:
            return 0
        return max(0, min(99, int(100 * self.data_processed / self.data_total)))


@dataclass(frozen=True)
class MigrationStats:
    """A finished live migration: the call's wall time, and QEMU's figures from the destination's
    completed job (`downtime_ms` is how long the guest was paused; None when libvirt did not say)."""

    wall_seconds: float
    downtime_ms: int | None = None
    total_ms: int | None = None
    data_total: int = 0
    data_processed: int = 0
    disk_processed: int = 0


# --- storage domains (issue #11) ---

@dataclass(frozen=True)
class PoolSpec:
    """A storage pool to define: a `dir` pool at `path`, or a `netfs` pool libvirt mounts at `path` from
    `source_host:/source_dir` (`source_format` "glusterfs": a GlusterFS volume over FUSE; "nfs": NFS)."""

    name: str
    path: str
    type: str = "dir"
    source_host: str = ""
    source_dir: str = ""
    source_format: str = ""


@dataclass(frozen=True)
class PoolUsage:
    """A pool's size, space in use and free space in bytes, as libvirt reports it after a refresh, and
    whether it runs (an inactive pool reports zeros)."""

    name: str
    type: str
    path: str
    active: bool
    capacity_bytes: int = 0
    allocation_bytes: int = 0
    available_bytes: int = 0
# --- backups with checkpoints (issue #11) --------------------------------------------------------

@dataclass(frozen=True)
class BackupDiskSpec:
    """One disk of a backup: push mode writes `file` (a qcow2 the backup creates); pull mode keeps the
    changes the guest makes meanwhile in `scratch` (a qcow2 libvirt creates and removes)."""

    target: str
    file: str = ""
    scratch: str = ""


@dataclass(frozen=True)
class BackupStart:
    """A backup job started on a domain: pull mode's NBD exports ({target: URI}), empty for push."""

    exports: dict[str, str]


@dataclass(frozen=True)
class BackupProgress:
    """The domain's backup job: bytes done of the total; `done` once it has ended (`error` when it failed)."""

    total: int = 0
    processed: int = 0
    done: bool = False
    error: str = ""

    @property
    def percent(self) -> int:
        if self.done:
            return 100
        if not self.total:
            return 0
        return max(0, min(99, int(100 * self.processed / self.total)))
