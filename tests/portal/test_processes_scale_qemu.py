"""Several web processes and supervised processes (issue #13 parts 2 and 3), for real: PostgreSQL (the
test database), Redis (loopback, a key prefix of this test's own) and qemu:///system.

- Two web processes (gunicorn + uvicorn workers, portal.gunicorn_conf), a job worker and the monitor: a VM
  created through process A's API is followed on a websocket served by process B until its job ends, and
  its serial console is opened through B with a ticket issued by A; a tus upload goes through A.
- `runportal` (supervisord): a job worker SIGKILLed mid-job is started again and the job ends once (the
  reaper retries it: attempt 2); the web process SIGKILLed is started again and the portal answers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import urllib.error
import urllib.request
import uuid
from email.message import Message

import pytest
import websockets
from django.db import connection
from django.test import Client
from rest_framework.authtoken.models import Token

from portal.models import Job
from tests.browser.conftest import _postgres_url
from tests.support import MANAGE, free_port, processes, wait_for
from vms import services
from vms.choices import VMStatus
from vms.models import VM

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.postgres,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="portal processes share the test database"),
]

REDIS_URL = os.environ.get("PORTAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WEB = [*MANAGE[:1], "-m", "gunicorn", "-c", "python:portal.gunicorn_conf"]


@pytest.fixture
def portal_env():
    """Portal processes on the test database, with jobs through the database queue and Redis channels."""
    return {"DJANGO_SETTINGS_MODULE": "tests.browser.settings",
            "PORTAL_DATABASE_URL": _postgres_url(connection.settings_dict),
            "PORTAL_REDIS_URL": REDIS_URL, "PORTAL_REDIS_PREFIX": f"test-procs-{uuid.uuid4().hex[:8]}",
            "PORTAL_LOG_LEVEL": "INFO"}


def _http(method: str, url: str, *, token: str | None = None, session: str | None = None, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
    """(status, headers (case-insensitive: uvicorn sends them lower-case), body)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if token:
        request.add_header("Authorization", f"Token {token}")
    if session:
        request.add_header("Cookie", f"sessionid={session}; csrftoken={'c' * 32}")
        request.add_header("X-CSRFToken", "c" * 32)
        request.add_header("Origin", url.split("/", 3)[0] + "//" + url.split("/", 3)[2])
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def _json_api(method: str, url: str, token: str, payload: dict | None = None) -> tuple[int, dict]:
    status, _, body = _http(method, url, token=token, body=json.dumps(payload).encode() if payload else None,
                            headers={"Content-Type": "application/json"})
    return status, json.loads(body or b"{}")


def _session_for(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def _follow_job(url: str, session: str, origin: str, job_id: str, timeout: float) -> list[str]:
    """The statuses of job `job_id` as the live-updates websocket reports them, until it ends."""
    seen: list[str] = []
    async with websockets.connect(url, origin=origin, additional_headers={"Cookie": f"sessionid={session}"}) as ws:
        async with asyncio.timeout(timeout):
            while not seen or seen[-1] not in ("succeeded", "failed", "errored"):
                message = json.loads(await ws.recv())
                events = message.get("jobs", []) + ([message] if message.get("kind") == "job" else [])
                for event in events:
                    if event.get("id") == job_id and (not seen or seen[-1] != event["status"]):
                        seen.append(event["status"])
    return seen


async def _serial_until(url: str, session: str, origin: str, marker: bytes, timeout: float) -> bytes:
    buf = b""
    async with websockets.connect(url, origin=origin, additional_headers={"Cookie": f"sessionid={session}"}) as ws:
        status = json.loads(await asyncio.wait_for(ws.recv(), 15))
        assert status["type"] == "status" and status["role"] == "control", status
        await ws.send(b"\r")
        await ws.send(b"uname -n\r")
        async with asyncio.timeout(timeout):
            while marker not in buf:
                frame = await ws.recv()
                if isinstance(frame, bytes):
                    buf += frame
                elif json.loads(frame).get("type") == "status":
                    continue
    return buf


def test_api_on_one_process_websockets_and_console_on_another(guest_image, alice, tmp_path, portal_env):
    token = Token.objects.create(user=alice).key
    session = _session_for(alice)
    port_a, port_b = free_port(), free_port()
    a, b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    with processes(tmp_path, portal_env) as procs:
        procs.start("web-a", [*WEB, "-b", f"127.0.0.1:{port_a}", "-w", "1", "portal.asgi:application"])
        procs.start("web-b", [*WEB, "-b", f"127.0.0.1:{port_b}", "-w", "1", "portal.asgi:application"])
        procs.start("worker", [*MANAGE, "db_worker", "--no-startup-delay", "--no-reload", "--interval", "0.3"])
        procs.start("monitor", [*MANAGE, "hypervisor_monitor"])
        procs.wait_for_port("web-a", port_a, timeout=90)
        procs.wait_for_port("web-b", port_b, timeout=90)
        wait_for(lambda: _http("GET", f"{b}/login/")[0] == 200, 90, "process B answering")

        # The websocket on B is open before the job exists: its events come from the worker through Redis.
        status, body = _json_api("POST", f"{a}/api/vms/", token, {
            "name": "two-procs", "vcpus": 1, "memory_mib": 128, "disk_gib": 1, "image": guest_image.pk})
        assert status == 202, body
        vm_id, job_id = body["vm"]["id"], str(body["job"]["id"])
        statuses = asyncio.run(_follow_job(f"ws://127.0.0.1:{port_b}/ws/updates/", session, b, job_id, 180))
        assert statuses[-1] == "succeeded", (statuses, Job.objects.get(pk=job_id).error)
        assert VM.objects.get(pk=vm_id).status == VMStatus.RUNNING

        # Console: a ticket from A (the page's ticket endpoint, this session), the relay on B.
        status, _, raw = _http("POST", f"{a}/consoles/vm/{vm_id}/ticket/", session=session, body=b"kind=serial",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 200, raw
        ticket = json.loads(raw)
        assert ticket["tier"] == "channels" and ticket["url"].startswith(f"/ws/consoles/vm/{vm_id}/serial/")
        out = asyncio.run(_serial_until(f"ws://127.0.0.1:{port_b}{ticket['url']}", session, b, b"two-procs", 120))
        assert b"two-procs" in out
        # The ticket reached B's log only redacted (uvicorn's websocket line).
        assert ticket["ticket"] not in procs.log("web-b") and "serial/?ticket=…" in procs.log("web-b")

        # A tus upload through A: 3 MiB in one PATCH, read by uvicorn in pieces, stored whole.
        data = os.urandom(3 * 1024 * 1024)
        meta = f"filename {base64.b64encode(b'blob.raw').decode()}"
        status, headers, raw = _http("POST", f"{a}/api/uploads/", token=token, headers={
            "Tus-Resumable": "1.0.0", "Upload-Length": str(len(data)), "Upload-Metadata": meta})
        assert status == 201, raw
        status, headers, raw = _http("PATCH", headers["Location"], token=token, body=data, headers={
            "Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
        assert status == 204 and headers["Upload-Offset"] == str(len(data)), raw

        status, body = _json_api("DELETE", f"{a}/api/vms/{vm_id}/", token)
        assert status == 202, body
        wait_for(lambda: not Job.objects.get(pk=body["job"]["id"]).is_active, 120, "the delete job ending")
        assert Job.objects.get(pk=body["job"]["id"]).status == "succeeded"


def _supervised(procs, run_dir) -> dict[str, int]:
    """{program: pid} of the RUNNING programs, from supervisorctl."""
    ctl = [MANAGE[0], "-m", "supervisor.supervisorctl", "-c", str(run_dir / "supervisord.conf"), "status"]
    out = procs.run(ctl).stdout
    return {m[1].split(":")[-1]: int(m[2]) for m in re.finditer(r"^(\S+)\s+RUNNING\s+pid (\d+)", out, re.M)
            } if out else {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_supervised_processes_come_back_after_sigkill_and_the_job_ends_once(firmware_image, alice, tmp_path,
                                                                            portal_env):
    # A firmware-only guest ignores the ACPI button: its Stop job waits PORTAL_STOP_TIMEOUT_SECONDS, a job
    # long enough to kill its worker in the middle, that then fails with a clear message.
    vm = services.vm_create(actor=alice, via="cli", name="supervised", vcpus=1, memory_mib=64, disk_gib=1).vm
    port, run_dir = free_port(), tmp_path / "run"
    env = {**portal_env, "PORTAL_STOP_TIMEOUT_SECONDS": "8", "PORTAL_JOB_HEARTBEAT_SECONDS": "1",
           "PORTAL_JOB_STALE_SECONDS": "4", "PORTAL_RECONCILE_SECONDS": "1"}
    try:
        with processes(tmp_path, env) as procs:
            runportal = procs.start("runportal", [*MANAGE, "runportal", "--port", str(port), "--run-dir", str(run_dir),
                                                  "--workers", "1", "--web-workers", "2"], group=True)
            pids = wait_for(lambda: (p := _supervised(procs, run_dir)).keys() >= {"web", "worker-1", "monitor"}
                             and p, 60, "web, worker-1 and monitor running")
            procs.wait_for_port("runportal", port, timeout=90)

            queued = procs.run([*MANAGE, "vm", "--user", alice.username, "stop", vm.name])
            assert queued.returncode == 0, queued.stderr
            job = Job.objects.get(kind="vm.stop", target_id=str(vm.pk))
            wait_for(lambda: Job.objects.get(pk=job.pk).status == "running", 60, "the stop job running")
            assert f":{pids['worker-1']}:" in Job.objects.get(pk=job.pk).worker
            os.kill(pids["worker-1"], signal.SIGKILL)
            again = wait_for(lambda: (p := _supervised(procs, run_dir)).get("worker-1", pids["worker-1"])
                              != pids["worker-1"] and p, 60, "worker-1 started again")
            wait_for(lambda: not Job.objects.get(pk=job.pk).is_active, 90, "the job ending")
            job.refresh_from_db()
            assert (job.status, job.attempts) == ("failed", 2), (job.status, job.attempts, job.log)
            assert "did not power off" in job.error and f":{again['worker-1']}:" in job.worker
            assert job.step == "Failed"
            vm.refresh_from_db()
            assert vm.status == VMStatus.RUNNING  # what libvirt says, not a VM stuck in "stopping"

            # The web tier's master, killed: its workers follow it, supervisord starts it again, it answers.
            old_workers = [int(p) for p in procs.run(["pgrep", "-P", str(pids["web"])]).stdout.split()]
            assert len(old_workers) == 2
            os.kill(pids["web"], signal.SIGKILL)
            wait_for(lambda: _supervised(procs, run_dir).get("web", pids["web"]) != pids["web"], 60,
                      "web started again")
            wait_for(lambda: _http("GET", f"http://127.0.0.1:{port}/login/")[0] == 200, 90, "the portal answering")
            wait_for(lambda: not any(map(_alive, old_workers)), 30, "the old web workers gone")

            # SIGTERM to runportal (supervisord) stops every process, and it exits cleanly.
            children = list(_supervised(procs, run_dir).values())
            runportal.send_signal(signal.SIGTERM)
            assert runportal.wait(timeout=90) == 0
            assert not any(map(_alive, children))
            log = (run_dir / "log" / "supervisord.log").read_text()
            assert "exited: worker-1 (terminated by SIGKILL; not expected)" in log
            assert "exited: web (terminated by SIGKILL; not expected)" in log
    finally:
        services.vm_delete(actor=alice, via="cli", vm=VM.objects.get(pk=vm.pk))
