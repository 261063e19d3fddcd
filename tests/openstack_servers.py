"""A real local OpenStack Glance (image library) and Neutron (networks), without Keystone.

Used by the tests (fixtures `glance_server`, `neutron_server` in tests/conftest.py), the benchmarks and
the demo (`scripts/openstack-dev.sh start|stop|status`, which runs `python -m tests.openstack_servers`).
The servers' code lives in two virtualenvs outside the portal's venv, built by `scripts/setup.sh --test`
(scripts/openstack-venvs.sh) under ${PORTAL_OPENSTACK_DIR:-/var/lib/vmportal/openstack}/{glance,neutron}.
This module only needs the standard library (openstacksdk is imported by `connection()` alone).

- `GlanceServer`: glance-api (`glance.wsgi.api:application` under gunicorn gthread) on 127.0.0.1 and a free
  port; its own PostgreSQL database on 127.0.0.1:5432 (user postgres, trust), created fresh and schema'd
  by `glance-manage db_sync`; file store, staging and tasks stores in a temporary directory; no Keystone
  (`[paste_deploy] flavor =`) with a paste filter that gives every request project `project_id`, user
  `user_id` and roles admin,member,reader unless the request sends its own X-Project-Id / X-User-Id /
  X-Roles headers (multi-tenant tests); web-download allowed from 127.0.0.1 (any port).
- `NeutronServer`: the Neutron API only (`neutron.wsgi.api:application` under uWSGI, `auth_strategy =
  noauth`, ML2 with type drivers flat/vlan/vxlan and no mechanism drivers, `transport_url = fake:/`, no
  Nova/DHCP notifications, `service_plugins = router`); its own MariaDB database on 127.0.0.1:3306 (root,
  no password: Neutron's migrations are MySQL-only), `neutron-db-manage upgrade heads`. Ports stay DOWN
  (no agents): it holds definitions only. Requests without X-Project-Id get project "fake_project_id".
- `start()` returns when the server answers (generous deadline); `stop()` ends the server's process group
  by PID, waits, drops the database and removes the temporary directory. Both are context managers.
- Databases are named `vmportal_glance_<pid>_<n>` / `vmportal_neutron_<pid>_<n>`; `start()` first drops
  those left by processes that no longer exist (a killed test run).

One openstacksdk Connection for both, no Keystone (verified by tests/clouds/test_harness.py)::

    import openstack
    conn = openstack.connect(
        auth_type="none",
        auth={"endpoint": glance.url},          # required by the "none" plugin; any of the two URLs
        image_endpoint_override=glance.url,     # the ROOT url http://127.0.0.1:PORT (no /v2)
        network_endpoint_override=neutron.url,  # the ROOT url http://127.0.0.1:PORT (no /v2.0)
    )
    conn.image.images(); conn.network.networks()

`openstack_kwargs(glance=..., neutron=...)` builds exactly these kwargs; `clouds_yaml(...)` the same as a
clouds.yaml `clouds: {name: ...}` entry (`auth_type: none`, `auth: {endpoint: ...}`,
`image_endpoint_override`, `network_endpoint_override`). A plain `endpoint_override` does NOT work (the
SDK then finds "no supported versions"). Make one call on a Connection before sharing it across threads
(version discovery race).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OPENSTACK_DIR = Path(os.environ.get("PORTAL_OPENSTACK_DIR", "/var/lib/vmportal/openstack"))
GLANCE_VENV = OPENSTACK_DIR / "glance"
NEUTRON_VENV = OPENSTACK_DIR / "neutron"
HOST = "127.0.0.1"
PG_ARGS = ["-h", HOST, "-p", os.environ.get("PORTAL_OPENSTACK_PGPORT", "5432"), "-U", "postgres"]
MYSQL_ARGS = ["-h", HOST, "-P", os.environ.get("PORTAL_OPENSTACK_MYSQLPORT", "3306"), "-u", "root"]
START_DEADLINE = 180.0  # seconds: a first start on 2 busy cores imports a lot
_counter = itertools.count(1)


class OpenStackHarnessError(RuntimeError):
    """A server could not be built, started or stopped; the message says why (and what to run)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def venv_problem(venv: Path) -> str | None:
    """Why `venv` cannot be used (None when it can): missing, or half built (no stamp)."""
    if not (venv / "bin" / "python").exists():
        return f"{venv} is missing: run `scripts/setup.sh --test` (it runs scripts/openstack-venvs.sh)"
    if not (venv / ".vmportal-stamp").exists():
        return f"{venv} is half built (no stamp): run `scripts/setup.sh --test` again"
    return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run(argv: list[str], what: str, *, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise OpenStackHarnessError(f"{what} failed ({proc.returncode}): {' '.join(argv)}\n"
                                    f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc.stdout


def _http_status(url: str, path: str, timeout: float = 5) -> int | None:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


# --- the databases --------------------------------------------------------------------------------------

class _Database:
    kind = ""

    def __init__(self, name: str):
        self.name = name

    @property
    def url(self) -> str:
        """The SQLAlchemy URL the server's config gets."""
        raise NotImplementedError

    def create(self) -> None:
        raise NotImplementedError

    def drop(self) -> None:
        raise NotImplementedError

    def exists(self) -> bool:
        return self.name in self.list_names()

    @classmethod
    def list_names(cls) -> list[str]:
        raise NotImplementedError

    @classmethod
    def drop_orphans(cls, prefix: str) -> None:
        """Drop `<prefix><pid>_<n>` databases whose process is gone (a killed run left them)."""
        for name in cls.list_names():
            rest = name.removeprefix(prefix)
            if rest == name:
                continue
            pid = rest.split("_", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                cls(name).drop()


class PostgresDatabase(_Database):
    kind = "postgresql"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@{HOST}:{PG_ARGS[3]}/{self.name}"

    def _sql(self, sql: str) -> str:
        return _run(["psql", *PG_ARGS, "-d", "postgres", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql],
                    f"PostgreSQL ({sql})", timeout=60)

    def create(self) -> None:
        self.drop()
        self._sql(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        self._sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    @classmethod
    def list_names(cls) -> list[str]:
        return cls("postgres")._sql("SELECT datname FROM pg_database").split()


class MariaDatabase(_Database):
    kind = "mysql"

    @property
    def url(self) -> str:
        return f"mysql+pymysql://root@{HOST}:{MYSQL_ARGS[3]}/{self.name}?charset=utf8mb4"

    @staticmethod
    def _sql(sql: str) -> str:
        return _run(["mysql", *MYSQL_ARGS, "-N", "-B", "-e", sql], f"MariaDB ({sql})", timeout=60)

    def create(self) -> None:
        self.drop()
        self._sql(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4")

    def drop(self) -> None:
        self._sql(f"DROP DATABASE IF EXISTS `{self.name}`")

    @classmethod
    def list_names(cls) -> list[str]:
        return cls._sql("SHOW DATABASES").split()


# --- the servers ------------------------------------------------------------------------------------

class _Server:
    """One API server process (its own process group), its database and its temporary directory."""

    service = ""  # "image" / "network": the openstacksdk service type
    venv: Path
    database_class: type[_Database]

    def __init__(self, *, port: int | None = None, log_path: Path | None = None, workdir: Path | None = None,
                 db_name: str | None = None):
        self.port = port or 0
        self.db_name = db_name  # default: vmportal_<name>_<pid>_<n> (dropped by a later start once <pid> is gone)
        self.pid: int | None = None
        self.workdir = workdir
        self.log_path = log_path
        self.database: _Database | None = None
        self.started_in: float | None = None  # seconds from start() to the first good answer

    # -- public --
    @property
    def url(self) -> str:
        """The endpoint's root URL (what the SDK's <service>_endpoint_override wants)."""
        return f"http://{HOST}:{self.port}"

    def start(self) -> _Server:
        problem = venv_problem(self.venv)
        if problem:
            raise OpenStackHarnessError(f"{type(self).__name__}: {problem}")
        t0 = time.monotonic()
        prefix = f"vmportal_{self.name}_"
        self.database_class.drop_orphans(prefix)
        self.database = self.database_class(self.db_name or f"{prefix}{os.getpid()}_{next(_counter)}")
        self.port = self.port or free_port()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"vmportal-{self.name}-"))
        else:
            self.workdir.mkdir(parents=True, exist_ok=True)
        if self.log_path is None:
            self.log_path = self.workdir / f"{self.name}.log"
        try:
            self.database.create()
            self._write_config()
            self._migrate()
            self._spawn()
            self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - t0
        return self

    def stop(self, timeout: float = 30) -> None:
        """End the server's process group (by its PID), drop its database, remove its temporary dir."""
        if self.pid is not None:
            _stop_group(self.pid, timeout)
            self.pid = None
        if self.database is not None:
            self.database.drop()
            self.database = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> _Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def openstack_kwargs(self) -> dict[str, Any]:
        """`openstack.connect(**kwargs)` for this server alone (see `openstack_kwargs()` for both)."""
        return openstack_kwargs(**{self.name: self})

    def connection(self, headers: dict[str, str] | None = None) -> Any:
        """An `openstack.connection.Connection` to this server, no Keystone. `headers` go with every request
        (e.g. {"X-Project-Id": "tenant-b", "X-Roles": "member,reader"}: another tenant, not an admin)."""
        import openstack

        conn = openstack.connect(**self.openstack_kwargs())
        conn.session.additional_headers.update(headers or {})
        return conn

    def state(self) -> dict[str, Any]:
        """What `from_state` needs to find (and stop) this server from another process."""
        return {"url": self.url, "port": self.port, "pid": self.pid, "workdir": str(self.workdir),
                "database": self.database.name if self.database else None, "log": str(self.log_path)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _Server:
        server = cls(port=state["port"], log_path=Path(state["log"]), workdir=Path(state["workdir"]))
        server.pid = state["pid"]
        server.database = cls.database_class(state["database"]) if state["database"] else None
        return server

    def running(self) -> bool:
        return self.pid is not None and pid_alive(self.pid)

    # -- internals --
    name = ""

    def _write_config(self) -> None:
        raise NotImplementedError

    def _migrate(self) -> None:
        raise NotImplementedError

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "DJANGO"))}
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        return env

    ready_path = "/healthcheck"

    def _spawn(self) -> None:
        assert self.log_path is not None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=self._env(), cwd=self.workdir, start_new_session=True)
        self.pid = proc.pid
        self._proc = proc  # reaped by stop()'s waitpid; kept so Popen's finalizer does not warn

    def _wait_ready(self, t0: float) -> None:
        deadline = t0 + START_DEADLINE
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise OpenStackHarnessError(f"{self.name} exited ({self._proc.returncode}) while starting:\n"
                                            f"{self._log_tail()}")
            if _http_status(self.url, self.ready_path) == 200:
                return
            time.sleep(0.2)
        raise OpenStackHarnessError(f"{self.name} did not answer {self.url}{self.ready_path} within "
                                    f"{START_DEADLINE:.0f} s:\n{self._log_tail()}")

    def _log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:] if self.log_path else ""
        except OSError:
            return ""


def _stop_group(pid: int, timeout: float) -> None:
    """SIGTERM the process group led by `pid` (the server and its workers), SIGKILL after `timeout`."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        _reap(pid)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        _reap(pid)
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# --- Glance ---------------------------------------------------------------------------------------

# Each request gets a project, a user and roles unless it sends its own: glance's ContextMiddleware then
# builds an authenticated context from the headers, as it would behind keystonemiddleware.
_GLANCE_NOAUTH_FILTER = '''\
"""Paste filter written by tests/openstack_servers.py: identity headers for a Glance without Keystone."""


def filter_factory(global_conf, **local_conf):
    defaults = {
        "HTTP_X_IDENTITY_STATUS": "Confirmed",
        "HTTP_X_PROJECT_ID": local_conf.get("project_id", "vmportal"),
        "HTTP_X_TENANT_ID": local_conf.get("project_id", "vmportal"),
        "HTTP_X_USER_ID": local_conf.get("user_id", "vmportal"),
        "HTTP_X_ROLES": local_conf.get("roles", "admin,member,reader"),
    }

    def factory(app):
        def middleware(environ, start_response):
            for key, value in defaults.items():
                environ.setdefault(key, value)
            if "HTTP_X_PROJECT_ID" in environ:
                environ["HTTP_X_TENANT_ID"] = environ["HTTP_X_PROJECT_ID"]
            return app(environ, start_response)
        return middleware
    return factory
'''

_GLANCE_PASTE = """\
[composite:glance-api]
paste.composite_factory = glance.api:root_app_factory
/: api
/healthcheck: healthcheck

[composite:api]
paste.composite_factory = glance.api:pipeline_factory
default = http_proxy_to_wsgi versionnegotiation vmportal-noauth context rootapp

[composite:rootapp]
paste.composite_factory = glance.api:root_app_factory
/: apiversions
/v2: apiv2app

[app:apiversions]
paste.app_factory = glance.api.versions:create_resource

[app:apiv2app]
paste.app_factory = glance.api.v2.router:API.factory

[app:healthcheck]
paste.app_factory = oslo_middleware:Healthcheck.app_factory
backends = disable_by_file
disable_by_file_path = {workdir}/healthcheck_disable

[filter:versionnegotiation]
paste.filter_factory = glance.api.middleware.version_negotiation:VersionNegotiationFilter.factory

[filter:context]
paste.filter_factory = glance.api.middleware.context:ContextMiddleware.factory

[filter:vmportal-noauth]
paste.filter_factory = vmportal_noauth:filter_factory
project_id = {project_id}
user_id = {user_id}
roles = admin,member,reader

[filter:http_proxy_to_wsgi]
paste.filter_factory = oslo_middleware:HTTPProxyToWSGI.factory
"""

_GLANCE_CONF = """\
[DEFAULT]
enabled_backends = local:file
enabled_import_methods = [glance-direct,web-download,copy-image]
show_image_direct_url = false
show_multiple_locations = false
use_stderr = true
debug = false

[database]
connection = {db_url}

[glance_store]
default_backend = local

[local]
filesystem_store_datadir = {workdir}/images

[os_glance_staging_store]
filesystem_store_datadir = {workdir}/staging

[os_glance_tasks_store]
filesystem_store_datadir = {workdir}/tasks

[paste_deploy]
flavor =
config_file = {workdir}/glance-api-paste.ini

[import_filtering_opts]
allowed_schemes = [http,https]
allowed_hosts = [127.0.0.1,localhost]
allowed_ports = []

[oslo_concurrency]
lock_path = {workdir}/locks
"""


class GlanceServer(_Server):
    """glance-api on PostgreSQL; `project_id`/`user_id`: who a request without identity headers is."""

    name = "glance"
    service = "image"
    venv = GLANCE_VENV
    database_class = PostgresDatabase
    threads = 8

    def __init__(self, *, project_id: str = "vmportal", user_id: str = "vmportal", **kwargs: Any):
        super().__init__(**kwargs)
        self.project_id = project_id
        self.user_id = user_id

    def _write_config(self) -> None:
        assert self.workdir is not None and self.database is not None
        for sub in ("images", "staging", "tasks", "locks"):
            (self.workdir / sub).mkdir(exist_ok=True)
        (self.workdir / "glance-api.conf").write_text(
            _GLANCE_CONF.format(db_url=self.database.url, workdir=self.workdir))
        (self.workdir / "glance-api-paste.ini").write_text(
            _GLANCE_PASTE.format(workdir=self.workdir, project_id=self.project_id, user_id=self.user_id))
        (self.workdir / "vmportal_noauth.py").write_text(_GLANCE_NOAUTH_FILTER)

    def _env(self) -> dict[str, str]:
        env = super()._env()
        env["OS_GLANCE_CONFIG_DIR"] = str(self.workdir)
        env["PYTHONPATH"] = str(self.workdir)  # the paste filter vmportal_noauth
        return env

    def _migrate(self) -> None:
        _run([str(self.venv / "bin" / "glance-manage"), "--config-dir", str(self.workdir), "db_sync"],
             "glance-manage db_sync", env=self._env())

    def _argv(self) -> list[str]:
        return [str(self.venv / "bin" / "gunicorn"), "--no-control-socket", "--worker-class", "gthread",
                "--workers", "1", "--threads", str(self.threads), "--bind", f"{HOST}:{self.port}",
                "--timeout", "600", "--graceful-timeout", "5", "glance.wsgi.api:application"]


# --- Neutron --------------------------------------------------------------------------------------

_NEUTRON_CONF = """\
[DEFAULT]
core_plugin = ml2
service_plugins = router
auth_strategy = noauth
transport_url = fake:/
api_paste_config = {venv}/etc/neutron/api-paste.ini
state_path = {workdir}/state
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
dhcp_agent_notification = false
allow_overlapping_ips = true
use_stderr = true
debug = false

[database]
connection = {db_url}

[oslo_concurrency]
lock_path = {workdir}/locks

[oslo_messaging_notifications]
driver = noop

[nova]
auth_type = none
"""

_ML2_CONF = """\
[ml2]
type_drivers = flat,vlan,vxlan
tenant_network_types = vxlan
mechanism_drivers =
extension_drivers = port_security

[ml2_type_flat]
flat_networks = *

[ml2_type_vlan]
network_vlan_ranges = physnet1:100:199

[ml2_type_vxlan]
vni_ranges = 1000:1999
"""


class NeutronServer(_Server):
    """The Neutron API (no agents) on MariaDB."""

    name = "neutron"
    service = "network"
    venv = NEUTRON_VENV
    database_class = MariaDatabase
    threads = 4

    def _config_files(self) -> list[Path]:
        assert self.workdir is not None
        return [self.workdir / "neutron.conf", self.workdir / "ml2_conf.ini"]

    def _write_config(self) -> None:
        assert self.workdir is not None and self.database is not None
        for sub in ("state", "locks"):
            (self.workdir / sub).mkdir(exist_ok=True)
        conf, ml2 = self._config_files()
        conf.write_text(_NEUTRON_CONF.format(db_url=self.database.url, workdir=self.workdir, venv=self.venv))
        ml2.write_text(_ML2_CONF)

    def _env(self) -> dict[str, str]:
        env = super()._env()
        env["OS_NEUTRON_CONFIG_DIR"] = str(self.workdir)
        env["OS_NEUTRON_CONFIG_FILES"] = ";".join(p.name for p in self._config_files())
        return env

    def _migrate(self) -> None:
        files = [arg for p in self._config_files() for arg in ("--config-file", str(p))]
        _run([str(self.venv / "bin" / "neutron-db-manage"), *files, "upgrade", "heads"],
             "neutron-db-manage upgrade heads", env=self._env())

    def _argv(self) -> list[str]:
        # keystoneauth reuses connections; uWSGI's http-socket does not keep them alive: "Connection:
        # close" on every answer avoids "connection reset" on the client's next request.
        return [str(self.venv / "bin" / "uwsgi"), "--http-socket", f"{HOST}:{self.port}",
                "--module", "neutron.wsgi.api:application", "--master", "--processes", "1",
                "--threads", str(self.threads), "--enable-threads", "--need-app", "--die-on-term",
                "--lazy-apps", "--add-header", "Connection: close", "--buffer-size", "65535", "--disable-logging"]


# --- clients ----------------------------------------------------------------------------------------

def openstack_kwargs(*, glance: _Server | None = None, neutron: _Server | None = None) -> dict[str, Any]:
    """The kwargs of ONE `openstack.connect()` / `openstack.connection.Connection()` reaching both servers
    without Keystone: auth_type "none" with an endpoint (the plugin needs one) and a per-service override
    holding the server's root URL (the SDK discovers the version: /v2 for images, /v2.0 for networks)."""
    servers = [s for s in (glance, neutron) if s is not None]
    if not servers:
        raise ValueError("openstack_kwargs() needs a glance and/or a neutron server")
    kwargs: dict[str, Any] = {"auth_type": "none", "auth": {"endpoint": servers[0].url}}
    for server in servers:
        kwargs[f"{server.service}_endpoint_override"] = server.url
    return kwargs


def clouds_yaml(name: str = "vmportal-local", **servers: _Server | None) -> dict[str, Any]:
    """The same as a clouds.yaml document: `{"clouds": {name: {...}}}` (openstack.connect(cloud=name))."""
    kwargs = openstack_kwargs(**servers)
    return {"clouds": {name: kwargs}}


def connect(*, glance: _Server | None = None, neutron: _Server | None = None) -> Any:
    import openstack

    return openstack.connect(**openstack_kwargs(glance=glance, neutron=neutron))


# --- the demo: python -m tests.openstack_servers start|stop|status -------------------------------------

def _state_file(state_dir: Path) -> Path:
    return state_dir / "servers.json"


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.openstack_servers",
                                     description="Start/stop a local Glance and Neutron for a demo.")
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--state-dir", type=Path, default=ROOT / "var" / "openstack")
    parser.add_argument("--log-dir", type=Path, default=ROOT / "var" / "log")
    args = parser.parse_args(argv)
    state_file = _state_file(args.state_dir)
    classes: dict[str, type[_Server]] = {"glance": GlanceServer, "neutron": NeutronServer}
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    servers = {name: classes[name].from_state(s) for name, s in state.items()}

    if args.action == "status":
        if not servers:
            print("not started")
            return 1
        ok = True
        for name, server in servers.items():
            up = server.running() and _http_status(server.url, server.ready_path) == 200
            ok &= up
            print(f"{name}: {'up' if up else 'DOWN'} {server.url} (pid {server.pid}, log {server.log_path})")
        return 0 if ok else 1

    if args.action == "stop":
        for name, server in servers.items():
            server.stop()
            print(f"{name}: stopped")
        state_file.unlink(missing_ok=True)
        return 0

    # start: whatever runs is left alone; what is recorded but dead is cleaned up and started again
    args.state_dir.mkdir(parents=True, exist_ok=True)
    for name, cls in classes.items():
        old = servers.get(name)
        if old is not None and old.running():
            print(f"{name}: already running at {old.url} (pid {old.pid})")
            continue
        if old is not None:
            old.stop()
        server = cls(log_path=args.log_dir / f"openstack-{name}.log", workdir=args.state_dir / name,
                     db_name=f"vmportal_{name}_demo")
        try:
            server.start()
        except OpenStackHarnessError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
        servers[name] = server
        state[name] = server.state()
        state_file.write_text(json.dumps(state, indent=2))
        print(f"{name}: {server.url} (pid {server.pid}, started in {server.started_in:.1f} s, "
              f"log {server.log_path})")
    kwargs = openstack_kwargs(glance=servers.get("glance"), neutron=servers.get("neutron"))
    print("openstack.connect(**" + json.dumps(kwargs) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
