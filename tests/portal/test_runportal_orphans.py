"""`runportal` is supervisord: a supervisord killed with SIGKILL takes its programs with it (they got the
parent-death signal), so no web process keeps the port and no second monitor or worker runs beside the
next runportal's (trial finding: they were adopted by PID 1 and kept running)."""

from __future__ import annotations

import os
import re
import signal
import uuid

import pytest
from django.db import connection

from tests.browser.conftest import _postgres_url
from tests.support import MANAGE, free_port, processes, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for this purpose
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    return True


def test_a_killed_supervisord_leaves_no_process_behind(tmp_path):
    env = {"DJANGO_SETTINGS_MODULE": "tests.browser.settings",
           "PORTAL_DATABASE_URL": _postgres_url(connection.settings_dict),
           "PORTAL_REDIS_URL": "redis://127.0.0.1:6379/0", "PORTAL_REDIS_PREFIX": f"test-orphans-{uuid.uuid4().hex[:8]}"}
    port, run_dir = free_port(), tmp_path / "run"
    with processes(tmp_path, env) as procs:
        runportal = procs.start("runportal", [*MANAGE, "runportal", "--port", str(port), "--run-dir", str(run_dir),
                                              "--workers", "1", "--web-workers", "1"], group=True)
        procs.wait_for_port("runportal", port, timeout=90)
        ctl = [MANAGE[0], "-m", "supervisor.supervisorctl", "-c", str(run_dir / "supervisord.conf"), "status"]

        def running() -> dict[str, int]:
            out = procs.run(ctl).stdout or ""
            return {m[1].split(":")[-1]: int(m[2]) for m in re.finditer(r"^(\S+)\s+RUNNING\s+pid (\d+)", out, re.M)}

        pids = wait_for(lambda: (p := running()).keys() >= {"web", "worker-1", "monitor"} and p, 60,
                         "web, worker-1 and monitor running")
        web_workers = [int(p) for p in procs.run(["pgrep", "-P", str(pids["web"])]).stdout.split()]
        assert web_workers
        os.kill(runportal.pid, signal.SIGKILL)  # runportal execs supervisord: the same PID
        runportal.wait(timeout=10)
        everyone = [*pids.values(), *web_workers]
        wait_for(lambda: not any(map(_alive, everyone)), 60, "every supervised process gone")
