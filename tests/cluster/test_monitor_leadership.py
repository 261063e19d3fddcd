"""Several monitors (issue #13): the shared periodic work runs once cluster-wide and each host is watched by
one monitor; when the monitor that leads dies, another takes its place within seconds. PostgreSQL session
advisory locks (cluster.leadership), with real `manage.py hypervisor_monitor` processes on the test database,
the leader killed by its PID."""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.db import connection

from cluster.choices import HostStatus
from cluster.leadership import CHORES, MonitorLocks, host_lock
from cluster.models import Host
from tests.browser.conftest import _postgres_url
from tests.support import MANAGE, processes, wait_for

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="advisory locks are PostgreSQL's"),
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(180),
]

CHORES_RAN = "running the chores"
LEADS = "leading: this monitor runs the chores"
FOLLOWS = "another monitor leads and runs the chores"


def test_a_lock_is_held_by_one_session_and_freed_when_it_ends():
    a, b = MonitorLocks(), MonitorLocks()
    try:
        assert a.acquire(CHORES) and a.acquire(CHORES)  # idempotent: held once
        assert not b.acquire(CHORES)
        assert b.acquire(host_lock(7)) and not a.acquire(host_lock(7))
        a.release(CHORES)
        assert b.acquire(CHORES)
        b.close()  # the session ends: every lock it held is free (once the server has ended it)
        wait_for(lambda: a.acquire(CHORES) and a.acquire(host_lock(7)), 10, "the locks of a closed session")
        assert a.held == {CHORES, host_lock(7)}
    finally:
        a.close()
        b.close()


def test_two_monitors_run_the_chores_once_and_the_survivor_takes_over(tmp_path):
    Host.objects.create(name="watched", uri="test:///default", status=HostStatus.UP, enabled=True)
    env = {"PORTAL_DATABASE_URL": _postgres_url(connection.settings_dict), "PORTAL_LOG_LEVEL": "DEBUG"}
    monitor = [*MANAGE, "hypervisor_monitor", "--interval", "1"]
    with processes(tmp_path, env) as procs:
        first = procs.start("monitor-a", monitor)
        procs.wait_for_log("monitor-a", LEADS, timeout=60)
        procs.wait_for_log("monitor-a", "watching lifecycle events of watched", timeout=30)
        procs.start("monitor-b", monitor)
        procs.wait_for_log("monitor-b", FOLLOWS, timeout=60)

        def runs(name: str) -> int:
            return procs.log(name).count(CHORES_RAN)

        started, at_start = time.monotonic(), runs("monitor-a")
        wait_for(lambda: runs("monitor-a") >= at_start + 5, 30, "five more chore runs by the leader")
        elapsed = time.monotonic() - started
        assert runs("monitor-b") == 0, procs.log("monitor-b")[-3000:]
        # Once per interval (1 s), not once per monitor: at most one run per second since, plus one.
        assert runs("monitor-a") - at_start <= elapsed / 1.0 + 1, (runs("monitor-a") - at_start, elapsed)
        assert "watched" not in procs.log("monitor-b"), "the host is watched by both monitors"

        os.kill(first.pid, signal.SIGKILL)  # the leader dies without a word
        first.wait()
        killed_at = time.monotonic()
        wait_for(lambda: LEADS in procs.log("monitor-b"), 30, "monitor b leading")
        took = time.monotonic() - killed_at
        procs.wait_for_log("monitor-b", "watching lifecycle events of watched", timeout=30)
        before = runs("monitor-b")
        wait_for(lambda: runs("monitor-b") >= before + 2, 30, "chores run by the new leader")
        print(f"monitor b took the lead {took:.1f} s after monitor a was killed")
