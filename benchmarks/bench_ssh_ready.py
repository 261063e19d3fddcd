"""Debian 12 cloud-init VM, from "Create" to "SSH answers": through the portal vs raw libvirt-python.

What a developer waits for is not the create call but the moment `ssh debian@IP hostname` answers
with the VM's name. Both paths boot the same guest on the same namespace host (`scripts/nshost.sh up
vmp-bench`, a libvirtd in a network namespace of its own, so the guest's network, dnsmasq and SSH
traffic stay in there):

- portal: `vms.services.vm_create(image=debian, networks=[net])` with the immediate task backend (the
  create job runs inside the call: qcow2 overlay, NoCloud seed, define, start), then
  `vms.reconcile.nic_addresses_refresh(host=...)` polled for the NIC's address, as the monitor does;
- raw: the same work by hand with libvirt-python: a qcow2 overlay on the same base volume, a NoCloud
  seed ISO with the same meta-data / user-data / network-config uploaded as a raw volume, the same
  domain (kernel, initrd, cmdline, vCPUs, memory, NIC on the same libvirt network), start it, then the
  network's DHCPLeases() polled for its MAC.

Then the same loop for both: `ip netns exec vmp-bench ssh ... debian@IP hostname` until it prints the
VM's name. Phases are timed from the start of each path: create call returned, lease seen, sshd
answered (first attempt that reached sshd), ssh answered with the name. Polls are 1 s apart on both
sides. Runs are sequential (a VM is removed before the next one boots), raw first, alternating order
when --rounds > 1. The machine-wide QEMU lock is held throughout; everything made on the host, the
host itself (`nshost.sh down vmp-bench`) and the throwaway database go at the end, also on failure
(the host's state dir and its logs are kept after a failure, purged after a success).

    .venv/bin/python benchmarks/bench_ssh_ready.py [--rounds 1] [--vcpus 2] [--memory-mib 512]

Writes the `ssh_ready` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import fcntl
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.nshost import NSHOST_DIR, NsHypervisor, ns_down, ns_up  # noqa: E402  (no Django in there)

NS_NAME = "vmp-bench"
POOL_DIR = NSHOST_DIR / NS_NAME / "images"  # the namespace host's pool: never a directory the root daemon uses
TMP = tempfile.mkdtemp(prefix="vmportal-bench-ssh-")
os.environ.update({
    "DJANGO_SETTINGS_MODULE": "portal.settings.base",
    "PORTAL_DATA_DIR": TMP,
    "PORTAL_TASKS_BACKEND": "django.tasks.backends.immediate.ImmediateBackend",
    "PORTAL_INSTANCE_ID": f"bench-{uuid.uuid4().hex[:6]}",
    "PORTAL_DOMAIN_PREFIX": "vmpbench",
    "PORTAL_LOG_LEVEL": "WARNING",
    "PORTAL_STORAGE_DIR": str(POOL_DIR),
})
os.environ.pop("PORTAL_DATABASE_URL", None)

import django  # noqa: E402

django.setup()

import libvirt  # noqa: E402
import yaml  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402

from accounts.services import sshkey_add  # noqa: E402
from benchmarks.report import write_section  # noqa: E402
from cluster.services import host_register  # noqa: E402
from networks.models import Network  # noqa: E402
from networks.services import network_create, network_delete  # noqa: E402
from networks.validation import random_mac  # noqa: E402
from portal.hypervisor import DiskSpec, DomainSpec, NicSpec, get_driver  # noqa: E402
from portal.hypervisor.domain_xml import build_domain_xml, volume_xml  # noqa: E402
from quotas.models import Quota  # noqa: E402
from storage.recipes import RECIPES  # noqa: E402
from storage.services import image_register, pool_ensure  # noqa: E402
from vms import services  # noqa: E402
from vms.cloudinit import base_cloud_config, seed_iso  # noqa: E402
from vms.models import VM  # noqa: E402
from vms.reconcile import nic_addresses_refresh  # noqa: E402
from vms.services import SEED_TARGET  # noqa: E402

LOCK_PATH = "/tmp/vmportal-qemu.lock"
CIDR = "10.133.0.0/24"
POLL = 1.0  # seconds between lease polls and between ssh attempts, on both paths
BOOT_DEADLINE = 900  # seconds from create to ssh; a Debian boot under emulation takes 1-2 minutes here
GIB = 1024**3


@dataclass
class Run:
    """One boot: seconds from the start of the path to each phase."""

    path: str
    name: str
    order: int
    created: float = math.nan  # the create call (portal) / dom.create() (raw) returned
    lease: float = math.nan  # the NIC's IPv4 address was known
    sshd: float = math.nan  # first ssh attempt that reached sshd (refused key or success)
    ssh: float = math.nan  # `hostname` answered the VM's name
    ip: str = ""
    attempts: int = 0
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    busy_before: float = math.nan  # busy fraction of all cores in the few seconds before the start
    qemu_cpu: float = math.nan  # CPU seconds of the VM's QEMU process, start to ssh answered
    own_cpu: float = math.nan  # CPU seconds of this script meanwhile (the portal's or raw client's polling)
    other_cpu: float = math.nan  # CPU seconds of everything else on the machine meanwhile
    steal: float = math.nan  # seconds the hypervisor under this machine took the CPUs away
    _cpu0: tuple[float, float] = (0.0, 0.0)
    _own0: float = 0.0

    def cpu_start(self) -> None:
        self._cpu0 = cpu_times()
        self._own0 = own_cpu_seconds()

    def cpu_stop(self, domain: str) -> None:
        """Where the machine's CPU time went during the boot: the guest's QEMU, or anything else (the
        portal, libvirtd, dnsmasq, ssh, and any other work on this 2-core machine) - a boot is CPU-bound
        under TCG, so other work slows it down."""
        busy, steal = cpu_times()
        self.qemu_cpu = qemu_cpu_seconds(domain)
        self.own_cpu = own_cpu_seconds() - self._own0
        self.other_cpu = busy - self._cpu0[0] - self.qemu_cpu - self.own_cpu
        self.steal = steal - self._cpu0[1]


def cpu_times() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / hz, steal / hz


def own_cpu_seconds() -> float:
    """CPU time of this process and its finished children (the ssh attempts, `ip netns exec`)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def wait_quiet(max_wait: float, *, busy_below: float = 0.10, window: float = 3.0) -> tuple[float, float]:
    """Wait (up to `max_wait` s) until the machine is nearly idle over a `window`: under TCG a boot
    competes for the 2 cores with whatever else runs (other test suites), so each boot should start on
    a quiet machine. Returns (seconds waited, busy fraction of all cores in the last window)."""
    start = time.monotonic()
    cores = os.cpu_count() or 1
    while True:
        b0, _ = cpu_times()
        time.sleep(window)
        b1, _ = cpu_times()
        busy = (b1 - b0) / (window * cores)
        waited = time.monotonic() - start
        if busy < busy_below or waited >= max_wait:
            return waited, busy


def qemu_cpu_seconds(domain: str) -> float:
    """CPU time of the QEMU running `domain` on the namespace host (found among the netns's processes)."""
    pids = subprocess.run(["ip", "netns", "pids", NS_NAME], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if f"guest={domain}".encode() not in b",".join(cmdline):
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return math.nan


def keypair(directory: Path) -> tuple[Path, str]:
    key = Ed25519PrivateKey.generate()
    private = directory / "id_ed25519"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    os.chmod(private, 0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} bench@vmportal"


def ssh_until_named(run: Run, t0: float, key: Path, login: str) -> None:
    """`ssh LOGIN@IP hostname` from inside the namespace, every POLL s, until it prints the VM's name."""
    last = ""
    while True:
        run.attempts += 1
        proc = subprocess.run(
            ["ip", "netns", "exec", NS_NAME, "ssh", "-i", str(key), "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5",
             "-o", "LogLevel=ERROR", f"{login}@{run.ip}", "hostname"],
            capture_output=True, text=True, timeout=60)
        now = time.perf_counter() - t0
        reached = proc.returncode == 0 or "Permission denied" in proc.stderr
        if reached and math.isnan(run.sshd):
            run.sshd = now
        if proc.returncode == 0 and proc.stdout.strip() == run.name:
            run.ssh = now
            return
        last = (proc.stderr or proc.stdout).strip()
        if now > BOOT_DEADLINE:
            raise TimeoutError(f"{run.path}: ssh to {run.ip} did not answer {run.name!r} in {BOOT_DEADLINE} s: {last}")
        time.sleep(POLL)


# --- portal path ---------------------------------------------------------------------------------

def portal_run(*, user, host, image, network, key: Path, vcpus: int, memory_mib: int, name: str,
               order: int, made: list[VM]) -> Run:
    run = Run(path="portal", name=name, order=order, load_before=os.getloadavg())
    run.cpu_start()
    t0 = time.perf_counter()
    result = services.vm_create(actor=user, via="cli", name=name, image=image, networks=[network], vcpus=vcpus,
                                memory_mib=memory_mib, disk_gib=image.min_disk_gib)
    run.created = time.perf_counter() - t0
    made.append(result.vm)
    result.job.refresh_from_db()
    vm = VM.objects.get(pk=result.vm.pk)
    if result.job.status != "succeeded" or vm.status != "running":
        raise RuntimeError(f"portal create: job {result.job.status} ({result.job.error}), VM {vm.status} "
                           f"({vm.last_error})")
    nic = vm.nics.get()
    while True:
        nic_addresses_refresh(host=host)
        nic.refresh_from_db()
        if nic.ip_address:
            run.lease, run.ip = time.perf_counter() - t0, nic.ip_address
            break
        if time.perf_counter() - t0 > BOOT_DEADLINE:
            raise TimeoutError(f"portal: no DHCP lease for {nic.mac} in {BOOT_DEADLINE} s")
        time.sleep(POLL)
    ssh_until_named(run, t0, key, image.login_user)
    run.cpu_stop(vm.domain_name)
    return run


def portal_remove(user, vm: VM) -> None:
    vm.refresh_from_db()
    if vm.status != "deleted":
        deleted = services.vm_delete(actor=user, via="cli", vm=vm)
        deleted.job.refresh_from_db()
        if deleted.job.status != "succeeded":
            raise RuntimeError(f"portal delete of {vm.name}: {deleted.job.error}")


# --- raw path ------------------------------------------------------------------------------------

def raw_documents(*, user, image, name: str, uuid_: str, mac: str) -> dict[str, str]:
    """The documents the portal writes for a VM like this one (vms.cloudinit): meta-data, the portal's
    #cloud-config (its own dict, rendered for a stand-in with the same owner, image and name) and a
    network-config taking DHCP on the one NIC."""
    stand_in = SimpleNamespace(owner=user, image=image, name=name)
    return {
        "meta-data": yaml.safe_dump({"instance-id": f"iid-{uuid_}", "local-hostname": name}, sort_keys=False),
        "user-data": "#cloud-config\n" + yaml.safe_dump(base_cloud_config(stand_in), sort_keys=False),
        "network-config": yaml.safe_dump({"version": 2, "ethernets": {
            "nic0": {"match": {"macaddress": mac}, "set-name": "eth0", "dhcp4": True}}}, sort_keys=False),
    }


def raw_run(*, conn, user, image, pool_name: str, net_name: str, key: Path, vcpus: int, memory_mib: int,
            name: str, order: int, made: list[tuple[str, str]]) -> Run:
    run = Run(path="raw", name=name, order=order, load_before=os.getloadavg())
    run.cpu_start()
    t0 = time.perf_counter()
    u = str(uuid.uuid4())
    dom_name = f"{settings.DOMAIN_PREFIX}-raw-{u.replace('-', '')[:12]}"
    mac = random_mac()
    data = seed_iso(raw_documents(user=user, image=image, name=name, uuid_=u, mac=mac))
    pool = conn.storagePoolLookupByName(pool_name)
    made.append(("volume", f"{dom_name}-disk0.qcow2"))
    disk = pool.createXML(volume_xml(name=f"{dom_name}-disk0.qcow2", capacity_bytes=image.min_disk_gib * GIB,
                                     backing_path=image.path, backing_format=image.format), 0)
    made.append(("volume", f"{dom_name}-cidata.iso"))
    seed = pool.createXML(volume_xml(name=f"{dom_name}-cidata.iso", capacity_bytes=len(data), fmt="raw"), 0)
    stream = conn.newStream(0)
    seed.upload(stream, 0, len(data), 0)
    offset = 0
    while offset < len(data):
        sent = stream.send(data[offset:offset + 262144])
        if sent < 0:
            stream.abort()
            raise RuntimeError("seed upload: stream send failed")
        offset += sent
    stream.finish()
    spec = DomainSpec(
        name=dom_name, uuid=u, vcpus=vcpus, memory_mib=memory_mib, domain_type="qemu", title=name,
        disks=(DiskSpec(path=disk.path(), target="vda", bus="virtio", format="qcow2"),
               DiskSpec(path=seed.path(), target=SEED_TARGET, bus="virtio", format="raw", readonly=True)),
        nics=(NicSpec(network=net_name, mac=mac),),
        kernel=image.kernel_path, initrd=image.initrd_path, cmdline=image.cmdline.replace("{hostname}", name),
        graphics_listen=settings.GRAPHICS_LISTEN)
    made.append(("domain", dom_name))
    dom = conn.defineXML(build_domain_xml(spec))
    dom.create()
    run.created = time.perf_counter() - t0
    net = conn.networkLookupByName(net_name)
    while True:
        ips = [lease.get("ipaddr") for lease in net.DHCPLeases()
               if (lease.get("mac") or "").lower() == mac and lease.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4]
        if ips and ips[0]:
            run.lease, run.ip = time.perf_counter() - t0, ips[0]
            break
        if time.perf_counter() - t0 > BOOT_DEADLINE:
            raise TimeoutError(f"raw: no DHCP lease for {mac} in {BOOT_DEADLINE} s")
        time.sleep(POLL)
    ssh_until_named(run, t0, key, image.login_user)
    run.cpu_stop(dom_name)
    return run


def raw_remove(conn, pool_name: str, made: list[tuple[str, str]]) -> None:
    """Destroy and undefine the raw domains, delete their volumes (each step on its own: best effort)."""
    for kind, name in [m for m in made if m[0] == "domain"] + [m for m in made if m[0] == "volume"]:
        try:
            if kind == "domain":
                dom = conn.lookupByName(name)
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                                  | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
            else:
                conn.storagePoolLookupByName(pool_name).storageVolLookupByName(name).delete(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_STORAGE_VOL):
                print(f"raw cleanup of {kind} {name}: {exc}", file=sys.stderr)
    made.clear()


# --- report --------------------------------------------------------------------------------------

def machine_notes(conn) -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.splitlines()
    lib = conn.getLibVersion()
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    return [
        f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB RAM; QEMU {qemu[0].split()[3] if qemu else '?'}, "
        f"libvirt {lib // 1_000_000}.{lib // 1000 % 1000}.{lib % 1000}",
        "domain type `qemu`: emulated (TCG), no KVM (this machine's /dev/kvm cannot boot Linux)",
    ]


def fmt(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:.1f}"


def report(runs: list[Run], *, vcpus: int, memory_mib: int, disk_gib: int, notes: list[str],
           load_after: tuple[float, float, float]) -> str:
    by = {p: [r for r in runs if r.path == p] for p in ("raw", "portal")}
    med = {p: statistics.median(r.ssh for r in rs) for p, rs in by.items()}
    ratio = med["portal"] / med["raw"]
    rounds = len(by["portal"])
    lines = [
        f"One Debian 12 cloud-init VM ({vcpus} vCPUs, {memory_mib} MiB, {disk_gib} GiB qcow2 overlay, one virtio "
        f"NIC on an isolated libvirt network) from *Create* to `ssh debian@IP hostname` answering its name, on a "
        f"namespace host (`scripts/nshost.sh up {NS_NAME}`), {rounds} run{'s' if rounds > 1 else ''} per path, "
        f"sequential ({'raw first' if rounds == 1 else 'alternating, raw first'}), {time.strftime('%Y-%m-%d')}. "
        f"Seconds from the start of each path; leases and ssh polled every {POLL:.0f} s on both paths.",
        "",
        "| run | path | create call returned | lease seen | sshd answered | ssh answered (total) | ssh attempts | "
        "busy before | load avg before (1/5/15 min) | CPU s: guest's QEMU / this script / everything else / steal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: r.order):
        what = ("portal: `vm_create` + `nic_addresses_refresh`" if r.path == "portal"
                else "raw libvirt-python + `DHCPLeases()`")
        lines.append(f"| {r.order} | {what} | {r.created:.2f} | {fmt(r.lease)} | {fmt(r.sshd)} | **{fmt(r.ssh)}** | "
                     f"{r.attempts} | {r.busy_before:.0%} | {' / '.join(f'{x:.2f}' for x in r.load_before)} | "
                     f"{fmt(r.qemu_cpu)} / {fmt(r.own_cpu)} / {fmt(r.other_cpu)} / {fmt(r.steal)} |")
    lines += [
        "",
        f"**Ratio portal / raw (time to SSH{', median' if rounds > 1 else ''}): {ratio:.3f}×** "
        f"({med['portal']:.1f} s vs {med['raw']:.1f} s).",
        "",
        "- *create call returned*: portal: `vm_create` with the immediate task backend, so the create job "
        "(overlay, NoCloud seed, define, start) ran inside the call; raw: the same libvirt work by hand, "
        "then `dom.create()` returned.",
        "- *lease seen*: portal: the NIC's address in the database after `vms.reconcile.nic_addresses_refresh` "
        "(what the monitor runs every reconcile); raw: the MAC in the network's `DHCPLeases()`.",
        "- *sshd answered*: the first attempt that reached sshd (refused key or success); *ssh answered*: "
        "`hostname` printed the VM's name with the user's key (cloud-init has set the name and the key).",
        "- *busy before*: each boot starts once the machine is idle (busy under 10% of both cores over 3 s, "
        "waiting up to `--quiet-wait` s); the load average still carries the previous boot.",
        "- *CPU s*: from the VM's start to ssh answering, CPU seconds of the guest's QEMU process, of this script "
        "(the portal's create and address polling, or the raw client's, and the ssh attempts), of everything "
        "else on the machine (libvirtd, dnsmasq, and any other work running then), and stolen "
        "by the hypervisor under this machine (/proc/stat and /proc/PID/stat; *everything else* is the "
        "difference, good to about a CPU second, so it can come out slightly negative). A TCG boot is "
        "CPU-bound: other work slows it.",
        f"- Machine: {notes[0]}; {notes[1]}. Load average after the runs: "
        f"{' / '.join(f'{x:.2f}' for x in load_after)}.",
        "- Nearly all of the time is the emulated guest booting (kernel, systemd, cloud-init, SSH host keys); "
        "the portal's own work is in *create call returned* and its polling. The ratio carries the boot's "
        "run-to-run noise, which is large here (tens of seconds when other work competes for the 2 cores): "
        "compare the runs' *everything else* CPU before reading it.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="runs per path (default 1)")
    parser.add_argument("--vcpus", type=int, default=2)
    parser.add_argument("--memory-mib", type=int, default=512)
    parser.add_argument("--quiet-wait", type=float, default=600,
                        help="before each boot, wait up to this many seconds for the machine to be idle")
    parser.add_argument("--no-write", action="store_true", help="print the section, leave docs/benchmarks.md alone")
    args = parser.parse_args()

    recipe = RECIPES["debian-12"]
    disk_file = recipe.outdir / recipe.disk_file
    if not disk_file.exists():
        # `make bench` runs every benchmark: say why this one has nothing to measure, and let the others run.
        print(f"skipped: {disk_file} is missing; build it first (manage.py image_build debian-12, or "
              f"scripts/build-debian-image.sh {recipe.outdir})")
        shutil.rmtree(TMP, ignore_errors=True)
        return

    def stop(signum, _frame):  # SIGTERM / SIGHUP: unwind through the finally blocks below
        print(f"stopped by signal {signum}: cleaning up", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)

    lock = open(LOCK_PATH, "w")
    print(f"waiting for {LOCK_PATH} ...", flush=True)
    fcntl.flock(lock, fcntl.LOCK_EX)
    ok = False
    hv: NsHypervisor | None = None
    conn = None
    raw_made: list[tuple[str, str]] = []
    portal_made: list[VM] = []
    user = network = admin = None
    pool_name = settings.STORAGE_POOL
    try:
        hv = ns_up(NS_NAME)
        hv.clear()  # leftovers of an interrupted run
        call_command("migrate", verbosity=0)
        host = host_register(actor=None, name=NS_NAME, uri=hv.uri, domain_type="qemu")
        if host.status != "up":
            raise RuntimeError(f"{hv.uri} is not reachable: {host.last_error}")
        pool_name = pool_ensure(host=host, path=str(hv.pool_dir)).name
        image = image_register(
            actor=None, host=host, name="bench-debian", title=recipe.title, source_path=str(disk_file), fmt="qcow2",
            boot_mode="kernel", kernel_path=str(recipe.outdir / recipe.kernel_file),
            initrd_path=str(recipe.outdir / recipe.initrd_file), cmdline=recipe.cmdline, cloud_init=True,
            login_user=recipe.login_user, min_disk_gib=recipe.min_disk_gib, replace=True)
        User = get_user_model()
        admin = User.objects.create_user("bench-admin", password="x", is_staff=True, is_superuser=True)
        user = User.objects.create_user("bench", password="x")
        Quota.objects.create(user=user, max_vms=10, max_vcpus=64, max_memory_mib=10**6, max_disk_gib=10**4)
        key, public = keypair(Path(TMP))
        sshkey_add(actor=user, via="cli", public_key=public)
        network = network_create(actor=admin, via="cli", name="benchnet", mode=Network.Mode.ISOLATED, cidr=CIDR,
                                 hosts=[host], is_public=True)
        conn = libvirt.open(hv.uri)
        notes = machine_notes(conn)
        # Both boots read the same files: have them in the page cache before the first one, so the
        # first path does not pay for a cold cache.
        for path in (image.path, image.kernel_path, image.initrd_path):
            with open(path, "rb") as fh:
                while fh.read(8 << 20):
                    pass

        runs: list[Run] = []
        order = 0
        for rnd in range(args.rounds):
            paths = ("raw", "portal") if rnd % 2 == 0 else ("portal", "raw")
            for path in paths:
                order += 1
                name = f"bench-{path}-{rnd + 1}"
                waited, busy = wait_quiet(args.quiet_wait)
                print(f"[{order}] {path}: booting {name} (waited {waited:.0f} s for a quiet machine: "
                      f"{busy:.0%} busy) ...", flush=True)
                if path == "raw":
                    run = raw_run(conn=conn, user=user, image=image, pool_name=pool_name,
                                  net_name=network.libvirt_name, key=key, vcpus=args.vcpus,
                                  memory_mib=args.memory_mib, name=name, order=order, made=raw_made)
                    raw_remove(conn, pool_name, raw_made)
                else:
                    run = portal_run(user=user, host=host, image=image, network=network, key=key, vcpus=args.vcpus,
                                     memory_mib=args.memory_mib, name=name, order=order, made=portal_made)
                    portal_remove(user, portal_made.pop())
                print(f"    created {run.created:.2f} s, lease {run.lease:.1f} s ({run.ip}), sshd {run.sshd:.1f} s, "
                      f"ssh {run.ssh:.1f} s, {run.attempts} attempts; CPU s: QEMU {run.qemu_cpu:.1f}, "
                      f"script {run.own_cpu:.1f}, "
                      f"other {run.other_cpu:.1f}, steal {run.steal:.1f}", flush=True)
                run.busy_before = busy
                runs.append(run)
        body = report(runs, vcpus=args.vcpus, memory_mib=args.memory_mib, disk_gib=image.min_disk_gib,
                      notes=notes, load_after=os.getloadavg())
        if not args.no_write:
            write_section("ssh_ready", "Debian VM: Create → SSH answers, portal vs raw libvirt", body)
        print(body)
        ok = True
    finally:
        if conn is not None:
            raw_remove(conn, pool_name, raw_made)
        for vm in portal_made:
            try:
                portal_remove(user, vm)
            except Exception as exc:  # best effort: hv.clear() below removes what is left
                print(f"portal cleanup of {vm.name}: {exc}", file=sys.stderr)
        if network is not None:
            try:
                network_delete(actor=admin, via="cli", network=network)
            except Exception as exc:
                print(f"network cleanup: {exc}", file=sys.stderr)
        if conn is not None:
            conn.close()
        if hv is not None:
            try:
                hv.clear()  # whatever is left: domains, networks, pools and their volumes (the base image)
            finally:
                get_driver(hv.uri).close()
                ns_down(NS_NAME, purge=ok)  # after a failure its state dir keeps the logs
        shutil.rmtree(TMP, ignore_errors=True)
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


if __name__ == "__main__":
    main()
