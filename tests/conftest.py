"""Shared fixtures.

- `test_host`: a Host on libvirt's test:///default driver (fast, in-process, no real guests).
- `qemu_host`: a Host on the real qemu:///system hypervisor (marker `qemu`). Tests that use it are
  serialised across processes by an exclusive lock on /tmp/vmportal-qemu.lock, so two suites never
  start VMs on this machine at the same time.
- `firmware_image` (SeaBIOS only, starts in ~0.4 s) and `guest_image` (the tiny Linux guest built
  by scripts/build-guest.sh) on qemu_host.
- Every domain, volume and network a run creates carries the run's INSTANCE_ID / DOMAIN_PREFIX and is
  removed at the end of the session, even when tests fail.
- `ns_hypervisor` / `ns_host` / `ns_guest_image`: a second libvirtd inside a network namespace of
  the session's own (scripts/nshost.sh, tests/nshost.py), for guests with networks: those never go
  on the root namespace's daemon. Same lock as `qemu_host`; cleared at session start and end.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from django.conf import settings

QEMU_URI = os.environ.get("PORTAL_TEST_QEMU_URI", "qemu:///system")
LOCK_PATH = "/tmp/vmportal-qemu.lock"
GUEST_DIR = Path(settings.GUEST_DIR)


@pytest.fixture(scope="session")
def qemu_lock():
    """Exclusive machine-wide lock for tests that start real VMs."""
    fh = open(LOCK_PATH, "w")
    fcntl.flock(fh, fcntl.LOCK_EX)
    yield
    fcntl.flock(fh, fcntl.LOCK_UN)
    fh.close()


def _cleanup_hypervisor(uri: str) -> None:
    """Remove every domain, volume and network this test run created on `uri`."""
    from portal.hypervisor import get_driver

    driver = get_driver(uri)
    try:
        for d in driver.list_domains():
            meta = d.metadata or {}
            if meta.get("instance") == settings.INSTANCE_ID or d.name.startswith(f"{settings.DOMAIN_PREFIX}-"):
                driver.undefine(d.uuid)
        for v in driver.list_volumes(pool=settings.STORAGE_POOL):
            if v.name.startswith(f"{settings.DOMAIN_PREFIX}-") or v.name.startswith(f"image-{settings.INSTANCE_ID}-"):
                driver.delete_volume(pool=settings.STORAGE_POOL, name=v.name)
        for n in driver.list_networks():
            if n.name.startswith(f"{settings.DOMAIN_PREFIX}-net-"):
                driver.remove_network(n.name)
    except Exception as exc:  # pragma: no cover - best effort at teardown
        print(f"cleanup of {uri} failed: {exc}")


@pytest.fixture(scope="session")
def _qemu_session(qemu_lock):
    yield
    _cleanup_hypervisor(QEMU_URI)


@pytest.fixture
def make_user(db, django_user_model):
    def make(username: str, *, staff: bool = False, quota: dict | None = None, **extra):
        user = django_user_model.objects.create_user(
            username=username, password="pw-" + username, is_staff=staff, is_superuser=staff, **extra)
        if quota is not None:
            from quotas.models import Quota

            Quota.objects.create(user=user, **quota)
        return user

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice", quota={"max_vms": 3, "max_vcpus": 4, "max_memory_mib": 2048, "max_disk_gib": 20})


@pytest.fixture
def bob(make_user):
    return make_user("bob", quota={"max_vms": 3, "max_vcpus": 4, "max_memory_mib": 2048, "max_disk_gib": 20})


@pytest.fixture
def admin_user(make_user):
    return make_user("root-admin", staff=True)


@pytest.fixture
def driver():
    """The gateway's driver for libvirt's test driver (what `test_host` runs on)."""
    from portal.hypervisor import get_driver

    return get_driver("test:///default")


@pytest.fixture
def client_for():
    """A DRF test client signed in as a given user: `client_for(alice).get(...)`."""
    from rest_framework.test import APIClient

    def make(user):
        client = APIClient()
        client.force_authenticate(user)
        return client

    return make


@pytest.fixture
def test_host(db):
    """A host on libvirt's test driver with a blank default image."""
    from cluster.services import host_register
    from storage.services import image_register

    host = host_register(actor=None, name="testhost", uri="test:///default", domain_type="qemu")
    with tempfile.NamedTemporaryFile(suffix=".img") as fh:
        fh.write(b"\0" * 510 + b"\x55\xaa" + b"\0" * 3584)  # a blank disk with an MBR
        fh.flush()
        image_register(actor=None, host=host, name="test-blank", title="Blank (test driver)",
                       source_path=fh.name, fmt="raw", is_default=True, replace=True)
    yield host
    # The test driver keeps its state for the whole process: free its (small, fake) pool.
    _cleanup_hypervisor("test:///default")


@pytest.fixture
def make_network(test_host):
    """Portal networks on the test host, made through networks.services (as the system); every libvirt
    network of this run is removed afterwards (the test driver keeps them for the whole process)."""
    from networks.services import network_create
    from portal.choices import Via

    def make(name: str = "lab", cidr: str = "10.77.0.0/24", **kwargs):
        kwargs.setdefault("hosts", [test_host])
        return network_create(actor=None, via=Via.SYSTEM, name=name, cidr=cidr, **kwargs)

    yield make
    _cleanup_networks("test:///default")


def _cleanup_networks(uri: str) -> None:
    from portal.hypervisor import get_driver

    driver = get_driver(uri)
    for net in driver.list_networks():
        if net.name.startswith(f"{settings.DOMAIN_PREFIX}-net-"):
            driver.remove_network(net.name)


def _blank_qcow2(path: Path) -> None:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)


@pytest.fixture
def qemu_host(transactional_db, _qemu_session):
    """A host on the real qemu:///system hypervisor (plain QEMU emulation: KVM here cannot boot Linux)."""
    from cluster.services import host_register

    host = host_register(actor=None, name="qemu-local", uri=QEMU_URI, domain_type="qemu")
    assert host.status == "up", f"qemu:///system is not reachable: {host.last_error}"
    return host


@pytest.fixture
def firmware_image(qemu_host, tmp_path):
    """A blank disk image: domains boot SeaBIOS only (fast lifecycle tests that need no OS)."""
    from storage.services import image_register

    src = tmp_path / "blank.qcow2"
    _blank_qcow2(src)
    return image_register(actor=None, host=qemu_host, name="test-firmware", title="Firmware only",
                          source_path=str(src), fmt="qcow2", replace=True, is_default=True)


@pytest.fixture
def guest_image(qemu_host):
    """The tiny real Linux guest (kernel + busybox initramfs, root on a qcow2 overlay)."""
    from storage.services import image_register

    root = GUEST_DIR / "root.qcow2"
    if not root.exists():
        pytest.fail(f"{root} is missing: run scripts/build-guest.sh (make test does)")
    return image_register(
        actor=None, host=qemu_host, name="test-guest", title="Tiny Linux guest", source_path=str(root),
        fmt="qcow2", boot_mode="kernel", kernel_path=str(GUEST_DIR / "vmlinuz"),
        initrd_path=str(GUEST_DIR / "initrd.gz"),
        cmdline="console=tty0 console=ttyS0,115200 portalroot=/dev/vda portalhost={hostname}",
        ready_marker="PORTAL GUEST READY", is_default=True, replace=True)


NS_HOST_NAME = "vmp-test1"


@pytest.fixture(scope="session")
def ns_hypervisor(_qemu_session):
    """The session's namespace host (`scripts/nshost.sh up vmp-test1`), cleared before and after use.

    Yields a tests.nshost.NsHypervisor: .name, .uri, .state_dir, .pool_dir, .exec(argv, timeout)
    (runs in its network namespace), .virsh(...), .pids(). At the end every domain, network and
    pool on it is removed and the host is stopped (its QEMU and dnsmasq processes die with it).
    """
    from portal.hypervisor import get_driver

    from .nshost import ns_down, ns_up

    try:
        hv = ns_up(NS_HOST_NAME)
    except RuntimeError as exc:
        pytest.fail(f"the namespace host did not start: {exc}")
    hv.clear()  # leftovers of an interrupted run
    yield hv
    try:
        hv.clear()
    finally:
        get_driver(hv.uri).close()
        ns_down(hv.name)


@pytest.fixture
def ns_host(transactional_db, ns_hypervisor):
    """The namespace host registered as a portal Host, with its storage pool in its own state dir;
    cleared of domains, networks and pools after each test."""
    from django.test import override_settings

    from cluster.services import host_register
    from storage.services import pool_ensure

    path = str(ns_hypervisor.pool_dir)
    # Registering makes the host's default pool (host_up -> storage) at STORAGE_DIR. Both daemons
    # see this machine's one file system, so the namespace host's pool goes in its state dir.
    with override_settings(STORAGE_DIR=path):
        host = host_register(actor=None, name=ns_hypervisor.name, uri=ns_hypervisor.uri, domain_type="qemu")
        pool_ensure(host=host, path=path)
    assert host.status == "up", f"{ns_hypervisor.uri} is not reachable: {host.last_error}"
    yield host
    # The database forgets this test's networks and VMs: so does the host (no order between tests).
    ns_hypervisor.clear()


@pytest.fixture
def ns_guest_image(ns_host):
    """The tiny Linux guest's image in the namespace host's pool (not the default image)."""
    from storage.services import image_register

    root = GUEST_DIR / "root.qcow2"
    if not root.exists():
        pytest.fail(f"{root} is missing: run scripts/build-guest.sh (make test does)")
    return image_register(
        actor=None, host=ns_host, name="test-guest-ns", title="Tiny Linux guest (namespace host)",
        source_path=str(root), fmt="qcow2", boot_mode="kernel", kernel_path=str(GUEST_DIR / "vmlinuz"),
        initrd_path=str(GUEST_DIR / "initrd.gz"),
        cmdline="console=tty0 console=ttyS0,115200 portalroot=/dev/vda portalhost={hostname}",
        ready_marker="PORTAL GUEST READY", replace=True)


@pytest.fixture
def debian_image(ns_host):
    """The Debian 12 cloud-init image (built by `scripts/setup.sh --test`) in the namespace host's pool."""
    from storage.recipes import RECIPES
    from storage.services import image_register

    recipe = RECIPES["debian-12"]
    disk = recipe.outdir / recipe.disk_file
    if not disk.exists():
        pytest.fail(f"{disk} is missing: run scripts/build-debian-image.sh (make test does)")
    return image_register(
        actor=None, host=ns_host, name="test-debian-ns", title=recipe.title, source_path=str(disk), fmt="qcow2",
        boot_mode="kernel", kernel_path=str(recipe.outdir / recipe.kernel_file),
        initrd_path=str(recipe.outdir / recipe.initrd_file), cmdline=recipe.cmdline, cloud_init=True,
        login_user=recipe.login_user, min_disk_gib=recipe.min_disk_gib, replace=True)


# Two namespace hosts joined by the fabric (scripts/nshost.sh --addr): a cluster of two real hosts.
CLUSTER_HOSTS = (("vmp-hosta", "10.99.7.1/24"), ("vmp-hostb", "10.99.7.2/24"))


@pytest.fixture(scope="session")
def ns_pair(_qemu_session):
    """Two namespace hosts that reach each other over TCP (qemu+tcp://10.99.7.1|2/system), for
    migration, HA and scheduling on real libvirt. Cleared before and after; stopped at the end."""
    from portal.hypervisor import get_driver

    from .nshost import ns_down, ns_up

    hvs = []
    try:
        for name, addr in CLUSTER_HOSTS:
            hvs.append(ns_up(name, addr=addr))
    except RuntimeError as exc:
        pytest.fail(f"a cluster namespace host did not start: {exc}")
    for hv in hvs:
        hv.clear()
    yield tuple(hvs)
    for hv in hvs:
        try:
            hv.clear()
        finally:
            get_driver(hv.uri).close()
            ns_down(hv.name)


def register_ns_host(hv, *, cluster=None, name: str | None = None):
    """Register namespace host `hv` as a portal Host (pool in its own state dir, migration URI on the fabric)."""
    from django.test import override_settings

    from cluster.models import Host
    from cluster.services import host_register
    from storage.services import pool_ensure

    path = str(hv.pool_dir)
    with override_settings(STORAGE_DIR=path):
        host = host_register(actor=None, name=name or hv.name, uri=hv.uri, domain_type="qemu")
        pool_ensure(host=host, path=path)
    Host.objects.filter(pk=host.pk).update(migration_uri=hv.tcp_uri, **({"cluster": cluster} if cluster else {}))
    host.refresh_from_db()
    assert host.status == "up", f"{hv.uri} is not reachable: {host.last_error}"
    return host


@pytest.fixture
def cluster_hosts(transactional_db, ns_pair):
    """Both namespace hosts registered in one cluster ("lab"); cleared of domains, networks and pools after
    each test. Returns (host_a, host_b)."""
    from cluster.models import Cluster

    cluster, _ = Cluster.objects.get_or_create(name="lab")
    hosts = tuple(register_ns_host(hv, cluster=cluster) for hv in ns_pair)
    yield hosts
    for hv in ns_pair:
        hv.clear()


@pytest.fixture
def cluster_shared_pools(cluster_hosts):
    """A pool marked shared on both cluster hosts, at one path of this machine's file system (a stand-in for
    NFS): VMs on it migrate without copying disks and can restart on the other host (HA)."""
    from storage.models import StoragePool
    from storage.services import pool_ensure

    from .nshost import NSHOST_DIR

    path = NSHOST_DIR / "shared-images"
    path.mkdir(parents=True, exist_ok=True)
    pools = [pool_ensure(host=h, name="vmportal-shared", path=str(path)) for h in cluster_hosts]
    StoragePool.objects.filter(pk__in=[p.pk for p in pools]).update(shared=True)
    for p in pools:
        p.shared = True
    return tuple(pools)


@pytest.fixture
def shared_vm_factory(cluster_hosts, cluster_shared_pools, tmp_path, admin_user, transactional_db):
    """VMs whose disk is on the shared pool (a SeaBIOS-only blank image registered there): created through
    vm_create with the shared pool as the portal's pool for the call."""
    from django.test import override_settings

    from cluster.models import Host
    from storage.services import image_register
    from vms.choices import VMStatus
    from vms.models import VM
    from vms.services import vm_create

    host_a, host_b = cluster_hosts
    path = cluster_shared_pools[0].path
    src = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), "16M"], check=True)
    with override_settings(STORAGE_POOL="vmportal-shared", STORAGE_DIR=path):
        image = image_register(actor=None, host=host_a, name="test-firmware-shared", title="Firmware only (shared)",
                               source_path=str(src), fmt="qcow2", replace=True)

    def make(name: str, *, on, **fields):
        others = Host.objects.exclude(pk=on.pk)
        enabled = {h.pk: h.enabled for h in others}
        others.update(enabled=False)  # placement picks `on`
        try:
            with override_settings(STORAGE_POOL="vmportal-shared", STORAGE_DIR=path):
                result = vm_create(actor=admin_user, via="cli", name=name, image=image, vcpus=1, memory_mib=64,
                                   disk_gib=1, networks=[])
        finally:
            for pk, was in enabled.items():
                Host.objects.filter(pk=pk).update(enabled=was)
        vm = VM.objects.get(pk=result.vm.pk)
        assert vm.status == VMStatus.RUNNING and vm.host_id == on.pk, (vm.status, vm.last_error)
        VM.objects.filter(pk=vm.pk).update(**fields)
        vm.refresh_from_db()
        return vm

    return make


_QEMU_FIXTURES = {"qemu_host", "ns_hypervisor", "ns_host", "ns_pair", "cluster_hosts", "cluster_shared_pools"}


# Under pytest-xdist (`make test` runs `-n 2 --dist loadgroup`), every test that starts real VMs goes to one
# group, so one worker runs them one after another (in collection order, as without xdist) while the other
# workers run the rest (browser tests without a real VM included: each has its own daphne on a free port, its
# own test database and an in-memory channel layer): real guests never share the machine with another VM
# test, and the session-long qemu lock is only ever asked for by that one worker.
VM_GROUP = "vms"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if _QEMU_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.qemu)
        if item.get_closest_marker("qemu"):
            item.add_marker(pytest.mark.xdist_group(VM_GROUP))
            if os.environ.get("PYTEST_XDIST_WORKER") and config.getvalue("loadgroup"):
                _name_group_in_nodeid(item, VM_GROUP)


def _name_group_in_nodeid(item, group: str) -> None:
    """--dist loadgroup tells the controller an item's group by a "@group" suffix of its node id. pytest-xdist
    3.8 writes it to `item._nodeid`, which pytest 9.2 no longer reads (the id is `item._id`, a NodeId): without
    this the group's tests were spread over both workers, the second one waiting for the first's qemu lock."""
    from _pytest.nodeid import NodeId

    if not item.nodeid.endswith(f"@{group}"):
        item._id = NodeId.parse(f"{item.nodeid}@{group}")


@pytest.fixture(scope="session", autouse=True)
def _worker_staging_dir():
    """Each xdist worker stages imports and uploads in a directory of its own: the files there are named by
    database ids, and every worker has its own test database (test_<name>_gw0, ...), so ids repeat."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        yield
        return
    saved = settings.IMAGE_STAGING_DIR
    path = f"{saved}-{worker}"
    settings.IMAGE_STAGING_DIR = path
    os.environ["PORTAL_IMAGE_STAGING_DIR"] = path  # the portal processes tests start
    yield
    settings.IMAGE_STAGING_DIR = saved
    os.environ.pop("PORTAL_IMAGE_STAGING_DIR", None)


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Each test starts with an empty cache: per-user counters (console ticket rate) never leak between tests."""
    from django.core.cache import cache

    cache.clear()
    yield


# --- storage domains (issue #11): a GlusterFS volume on this machine ---

GLUSTER_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gluster.sh"


@pytest.fixture(scope="session")
def gluster_volume(_qemu_session):
    """A started single-brick GlusterFS volume (`scripts/gluster.sh up`: glusterd without systemd, a host name
    in /etc/hosts for 127.0.0.1) and a created but stopped one, as {"host", "volume", "stopped"}. Under the
    qemu lock; stopped again at the end only when this session started it."""
    if not Path("/usr/sbin/glusterd").exists():
        pytest.fail("glusterd is missing: scripts/setup.sh --test installs glusterfs-server (make test does)")
    was_up = subprocess.run([str(GLUSTER_SCRIPT), "status"], capture_output=True).returncode == 0
    up = subprocess.run([str(GLUSTER_SCRIPT), "up"], capture_output=True, text=True)
    assert up.returncode == 0, f"scripts/gluster.sh up failed: {up.stdout}{up.stderr}"
    volume = os.environ.get("PORTAL_GLUSTER_VOLUME", "vmportal")
    yield {"host": os.environ.get("PORTAL_GLUSTER_HOST", "vmportal-gluster"), "volume": volume,
           "stopped": f"{volume}-stopped"}
    if not was_up:
        subprocess.run([str(GLUSTER_SCRIPT), "down"], capture_output=True)


_QEMU_FIXTURES |= {"gluster_volume"}


# --- a transactional test's flush on PostgreSQL: DELETE, not TRUNCATE ---

_KEPT_TABLES = {"django_content_type", "auth_permission"}


def _delete_flush(original):
    """Django empties the tables after each transactional test with one TRUNCATE of every table: on
    PostgreSQL that rewrites each table's files (0.7-1.3 s on this machine, for hundreds of tests). A DELETE
    of the same tables, in the same transaction, empties them in a few ms: the foreign keys Django makes
    there are DEFERRABLE INITIALLY DEFERRED, checked at commit, when every table is empty. Sequences are
    reset by the original (TRUNCATE ... RESTART IDENTITY) when a test asks for it.

    Content types and permissions stay: Django's post_migrate handlers write them all again after every
    flush (about a second per transactional test here, most of the flush); kept, they find them in place.
    They are what migrations make, the same for every test; with them kept, the flush's post_migrate signal
    (which only writes them: no app of this project listens to it) is not sent."""

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        tables = [t for t in tables if t not in _KEPT_TABLES]
        if reset_sequences or not tables:
            return original(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        return [f"{style.SQL_KEYWORD('DELETE')} {style.SQL_KEYWORD('FROM')} {style.SQL_FIELD(self.quote_name(t))};"
                for t in tables]

    return sql_flush


@pytest.fixture(scope="session", autouse=True)
def _fast_postgres_flush():
    from django.core.management.commands import flush
    from django.db import connections
    from django.db.backends.postgresql.operations import DatabaseOperations

    original, original_emit = DatabaseOperations.sql_flush, flush.emit_post_migrate_signal

    def emit_post_migrate_signal(verbosity, interactive, db, **kwargs):
        if connections[db].vendor != "postgresql":
            original_emit(verbosity, interactive, db, **kwargs)

    DatabaseOperations.sql_flush = _delete_flush(original)  # type: ignore[method-assign]
    flush.emit_post_migrate_signal = emit_post_migrate_signal  # type: ignore[assignment]
    yield
    DatabaseOperations.sql_flush = original  # type: ignore[method-assign]
    flush.emit_post_migrate_signal = original_emit  # type: ignore[assignment]


# --- a real local Glance and Neutron (issue #15): tests/openstack_servers.py ---


def _openstack_server(cls):
    from tests.openstack_servers import OpenStackHarnessError, venv_problem

    problem = venv_problem(cls.venv)
    if problem:
        pytest.fail(f"{cls.__name__}: {problem}", pytrace=False)
    server = cls()
    try:
        server.start()
    except OpenStackHarnessError as exc:
        pytest.fail(str(exc), pytrace=False)
    return server


@pytest.fixture(scope="session")
def glance_server():
    """A real glance-api (PostgreSQL database of its own, file store, no Keystone), started on first use and
    stopped at the end of the session. `.url`, `.connection()` (openstacksdk), tests/openstack_servers.py."""
    from tests.openstack_servers import GlanceServer

    server = _openstack_server(GlanceServer)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def neutron_server():
    """A real Neutron API (MariaDB database of its own, ML2 without agents, no Keystone), started on first
    use and stopped at the end of the session. `.url`, `.connection()`, tests/openstack_servers.py."""
    from tests.openstack_servers import NeutronServer

    server = _openstack_server(NeutronServer)
    yield server
    server.stop()
