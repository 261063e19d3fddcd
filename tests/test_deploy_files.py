"""The deployment files (issue #13 part 5) agree with the code: every PORTAL_* variable the environment
example names is read by the portal (or by a unit), the systemd units are valid and start the portal's
real commands, and the nginx site proxies what the portal serves with room for an upload chunk."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

from django.conf import settings
from django.core.management import get_commands

ROOT = Path(settings.BASE_DIR)
DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("vmportal*"))
SERVICES = [unit for unit in UNITS if unit.suffix == ".service"]
NGINX_SITE = DEPLOY / "nginx" / "vmportal.conf"
ENV_EXAMPLE = DEPLOY / "portal.env.example"

# How the code reads a knob: portal.env's helpers take the name without its PORTAL_ prefix.
_READ = re.compile(r"env\.(?:get|get_str|get_bool|get_int|get_float|get_list|require)\(\s*\"([A-Z0-9_]+)\"")


def _names_read_by_the_code() -> set[str]:
    names: set[str] = set()
    for path in ROOT.rglob("*.py"):
        if any(part in {".venv", "var", "tests", "node_modules"} for part in path.relative_to(ROOT).parts):
            continue
        names.update(f"PORTAL_{name}" for name in _READ.findall(path.read_text(errors="replace")))
    return names


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read(path)
    return parser


def test_every_variable_of_the_environment_example_is_read_by_the_portal_or_a_unit():
    example = ENV_EXAMPLE.read_text()
    named = set(re.findall(r"^#?\s*(PORTAL_[A-Z0-9_]+)=", example, flags=re.MULTILINE))
    used_by_units = {name for unit in UNITS for name in re.findall(r"\$\{?(PORTAL_[A-Z0-9_]+)", unit.read_text())}

    assert len(named) > 30
    unknown = named - _names_read_by_the_code() - used_by_units
    assert not unknown, f"deploy/portal.env.example names variables nothing reads: {sorted(unknown)}"
    # The knobs production must have are all there, uncommented.
    for required in ("PORTAL_DEBUG=0", "PORTAL_SECRET_KEY=", "PORTAL_ALLOWED_HOSTS=", "PORTAL_BASE_URL=",
                     "PORTAL_DATABASE_URL=", "PORTAL_REDIS_URL=", "PORTAL_TRUSTED_PROXIES=", "PORTAL_WEB_WORKERS="):
        assert re.search(rf"^{re.escape(required)}", example, flags=re.MULTILINE), required


def test_every_unit_variable_is_in_the_environment_example():
    example = ENV_EXAMPLE.read_text()
    for unit in UNITS:
        for name in re.findall(r"\$\{?(PORTAL_[A-Z0-9_]+)", unit.read_text()):
            assert re.search(rf"^{name}=", example, flags=re.MULTILINE), f"{unit.name} uses {name}"


def test_the_units_run_the_portals_commands_with_its_environment_and_restart():
    commands = get_commands()
    started = set()
    for path in SERVICES:
        unit = _unit(path)
        service = unit["Service"]
        assert unit["Unit"]["Description"], path.name
        assert service["EnvironmentFile"] == "/etc/vmportal/portal.env", path.name
        assert service["Restart"] == "always" and service["User"] == "vmportal", path.name
        assert unit["Install"]["WantedBy"] == "vmportal.target", path.name
        argv = service["ExecStart"].split()
        if "manage.py" in argv:
            command = argv[argv.index("manage.py") + 1]
            assert command in commands, f"{path.name}: manage.py {command} does not exist"
            started.add(command)
        else:
            # The project's gunicorn configuration (its worker class, worker count and pool): what runportal runs.
            assert argv[0].endswith("/gunicorn") and "python:portal.gunicorn_conf" in argv, path.name
            assert argv[argv.index("python:portal.gunicorn_conf") - 1] == "-c"
            assert argv[-1] == "portal.asgi:application"
            started.add("web")
    assert started == {"web", "db_worker", "hypervisor_monitor", "console_proxy"}
    assert (DEPLOY / "systemd" / "vmportal-worker@.service").is_file()  # a template: several workers


def test_systemd_analyze_verify_finds_nothing_but_the_absent_install_paths(tmp_path):
    """systemd's own check where it is installed (the units were parsed above in any case)."""
    if shutil.which("systemd-analyze") is None:
        for unit in UNITS:  # at least: every section parses and names a description
            assert _unit(unit)["Unit"]["Description"]
        return
    for unit in UNITS:
        target = tmp_path / (unit.name.replace("@.service", "@1.service"))
        target.write_text(unit.read_text())
    done = subprocess.run(["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.iterdir())],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    complaints = [line for line in (done.stdout + done.stderr).splitlines()
                  if line.strip() and not re.search(r"Command /opt/vmportal/\S+ is not executable", line)]
    assert not complaints, "\n".join(complaints)


def test_the_nginx_site_proxies_websockets_serves_static_files_and_takes_an_upload_chunk(tmp_path):
    site = NGINX_SITE.read_text()
    ws = site[site.index("location /ws/"):]
    ws = ws[:ws.index("}")]
    assert "proxy_set_header Upgrade $http_upgrade" in ws and "proxy_http_version 1.1" in ws
    assert f"alias {'/opt/vmportal/' + str(Path(settings.STATIC_ROOT).relative_to(ROOT))}/;" in site
    assert f"location {'/' + settings.STATIC_URL.strip('/')}/" in site
    size = re.search(r"client_max_body_size (\d+)m;", site)
    assert size and int(size.group(1)) * 1024 * 1024 > settings.IMAGE_UPLOAD_CHUNK_BYTES
    assert "ssl_certificate " in site and "X-Forwarded-Proto $scheme" in site
    # The one proxy the default PORTAL_TRUSTED_PROXIES=1 trusts appends the client; it sets the request id.
    assert "$proxy_add_x_forwarded_for" in site and "X-Request-ID $request_id" in site
    assert site.count("{") == site.count("}")
    if shutil.which("nginx"):  # nginx's own check where it is installed (it is not a dependency)
        _nginx_accepts(tmp_path)


def _nginx_accepts(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    site = NGINX_SITE.read_text().replace("/etc/ssl/vmportal/", f"{tmp_path}/").replace("/var/log/nginx/", f"{tmp_path}/")
    (tmp_path / "site.conf").write_text(site)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=t",
                    "-keyout", str(tmp_path / "privkey.pem"), "-out", str(tmp_path / "fullchain.pem")],
                   check=True, capture_output=True, timeout=60)
    conf.write_text(f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log; events {{}}\n"
                    f"http {{ include {tmp_path}/site.conf; }}\n")
    done = subprocess.run(["nginx", "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
