"""A web process keeps a bounded pool of PostgreSQL connections (PORTAL_DATABASE_POOL_MAX), whatever the
number of concurrent request threads: 50 clients on one process took 95 of PostgreSQL's 100 before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, threading, django
django.setup()
from django.db import connection, connections
from django.conf import settings

def work():
    with connection.cursor() as cur:
        cur.execute("SELECT pg_sleep(0.3)")
    connections.close_all()  # a request's end: its connection goes back to the pool

threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
pool = connection.pool
print(json.dumps({"options": settings.DATABASES["default"].get("OPTIONS", {}),
                  "opened": pool.get_stats().get("connections_num", 0)}))
"""


@pytest.mark.postgres
def test_eight_request_threads_share_a_pool_of_two_connections(db):
    from tests.browser.conftest import _postgres_url

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings.base", "PORTAL_DATABASE_POOL_MAX": "2",
           "PORTAL_DATABASE_URL": _postgres_url(connection.settings_dict), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["options"]["pool"]["max_size"] == 2
    assert 1 <= result["opened"] <= 2


def test_a_negative_pool_size_is_a_clear_start_up_error():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings.base", "PORTAL_DATABASE_POOL_MAX": "-1",
           "PORTAL_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/x", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", "import django; django.setup()"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "PORTAL_DATABASE_POOL_MAX must be 0 or more" in out.stderr
