"""The demo fallback on libvirt's test driver, as `make run` starts it where no hypervisor can run.

The test driver keeps its domains in the memory of one process, so `runportal` must serve it as one
process (web, jobs and monitor together): with separate processes the monitor saw none of the
worker's domains and marked every new VM "missing". This runs the real commands in subprocesses
on a database of their own and drives the portal over HTTP.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid

import pytest
from django.conf import settings
from django.db import connection

from tests.support import MANAGE, free_port, processes

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the portal subprocesses need a server database"),
]


def _call(method: str, url: str, token: str | None = None, payload: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def fallback_db():
    import psycopg

    s = connection.settings_dict
    name = f"vmptest_fallback_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(host=s["HOST"] or "127.0.0.1", port=s["PORT"] or 5432, user=s["USER"] or "postgres",
                            password=s["PASSWORD"] or None, dbname="postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    user = s["USER"] or "postgres"
    auth = f"{user}:{s['PASSWORD']}@" if s["PASSWORD"] else f"{user}@"
    try:
        yield f"postgresql://{auth}{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_run_command_on_the_test_driver_serves_one_process_that_keeps_vms_true(fallback_db, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_") and k != "DJANGO_SETTINGS_MODULE"}
    env.update(PORTAL_DEBUG="1",  # the demo asks for DEBUG (scripts/setup.sh writes it to var/demo.env)
               PORTAL_DATABASE_URL=fallback_db, PORTAL_LIBVIRT_URI="test:///default", PORTAL_DATA_DIR=str(tmp_path),
               PORTAL_RECONCILE_SECONDS="1", PORTAL_INSTANCE_ID=settings.INSTANCE_ID,
               PORTAL_DOMAIN_PREFIX=settings.DOMAIN_PREFIX, PORTAL_GUEST_DIR=settings.GUEST_DIR)
    with processes(tmp_path, env, inherit=False) as procs:  # as a user starts it: no test settings
        for step in (["migrate", "-v0"], ["setup_portal", "--no-probe", "--quiet"]):
            done = procs.run([*MANAGE, *step])
            assert done.returncode == 0, done.stderr[-2000:]
        logins = json.loads((tmp_path / "credentials.json").read_text())
        port = free_port()
        procs.start("runportal", [*MANAGE, "runportal", "--port", str(port)], port=port, group=True)
        base = f"http://127.0.0.1:{port}"

        status, body = _call("POST", f"{base}/api/auth/token/", payload={
            "username": "demo", "password": logins["demo"]})
        assert status == 200, body
        token = body["token"]
        status, body = _call("POST", f"{base}/api/vms/", token, {"name": "fb-1", "vcpus": 1, "memory_mib": 128,
                                                                  "disk_gib": 1})
        assert status == 202, body
        vm_url = f"{base}/api/vms/{body['vm']['id']}/"
        time.sleep(3)  # several reconciles of the monitor (every second here)
        status, vm = _call("GET", vm_url, token)
        assert status == 200, (vm, procs.log("runportal")[-3000:])
        assert (vm["status"], vm["last_error"]) == ("running", ""), procs.log("runportal")[-3000:]

        assert _call("POST", f"{vm_url}stop/", token)[0] == 202
        assert _call("GET", vm_url, token)[1]["status"] == "stopped"
        assert _call("DELETE", vm_url, token)[0] == 202
        assert _call("GET", vm_url, token)[0] == 404
        text = procs.log("runportal")
        assert "running the portal as one process" in text and "Traceback" not in text
