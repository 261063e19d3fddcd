"""The web tier: gunicorn with uvicorn workers serving portal.asgi:application (HTTP and websockets).

`gunicorn -c python:portal.gunicorn_conf portal.asgi:application` (what `runportal` and the systemd unit run)
starts PORTAL_WEB_WORKERS processes (default 2) sharing one listening socket; every page, API call and
websocket works whichever process serves it, because sessions live in the database and the channel
layer is Redis (PORTAL_REDIS_URL) as soon as more than one process serves.

This module is gunicorn's configuration (its module-level names that gunicorn knows are settings; the
command line overrides them) and the worker class. It imports no Django: gunicorn's master reads it.

- Access log: uvicorn writes it to the `uvicorn.access` logger and websocket handshakes (with their
  query strings, i.e. console tickets) to `uvicorn.error`; settings.LOGGING gives both the token
  redaction of portal.log_redaction and sends them through the root handler.
- Proxy headers: off. uvicorn would otherwise take X-Forwarded-For/-Proto from any loopback peer as the
  truth; the portal reads them itself, from PORTAL_TRUSTED_PROXIES proxies only (portal.net).
- Request bodies: uvicorn hands Django everything received since the last read (up to its 64 KiB
  flow-control mark per read, more when the socket delivered more), not daphne's fixed 8 KiB pieces.
- Database connections: each worker keeps a pool of PORTAL_DATABASE_POOL_MAX (default here 16) PostgreSQL
  connections (portal.settings.base), whatever the number of concurrent requests.
- A worker whose master is killed (SIGKILL) stops too (Linux parent-death signal), so it never keeps the
  port from the master that the supervisor starts again.
- Prometheus (metrics/, issue #14): the workers keep their request durations in prometheus_client's
  multiprocess files, in one directory per master: PROMETHEUS_MULTIPROC_DIR if the environment names one
  (its *.db files are removed at start: they belong to an earlier run), else a fresh temporary directory
  removed when the master exits. /metrics, served by any worker, sums every worker's files; a dead
  worker's counts stay in the sum (counters never go back), its live gauges are removed (child_exit).
"""

from __future__ import annotations

import ctypes
import glob
import os
import shutil
import signal
import tempfile
from typing import Any

from uvicorn_worker import UvicornWorker

_PR_SET_PDEATHSIG = 1


def _env_int(name: str, default: int) -> int:
    # portal.env imports Django; gunicorn's master must not, so this file reads its one knob itself.
    raw = os.environ.get(f"PORTAL_{name}", "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise SystemExit(f"PORTAL_{name} must be a whole number (got {raw!r})") from None
    if value < 1:
        raise SystemExit(f"PORTAL_{name} must be 1 or more (got {value})")
    return value


class PortalUvicornWorker(UvicornWorker):
    """uvicorn's gunicorn worker, without proxy-header rewriting and ending with its master."""

    CONFIG_KWARGS: dict[str, Any] = {**UvicornWorker.CONFIG_KWARGS, "proxy_headers": False}

    def init_process(self) -> None:
        # SIGTERM (uvicorn's graceful exit) when the master dies; then check it did not die already.
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):  # not Linux: gunicorn's own checks remain
            pass
        if os.getppid() != self.ppid:
            raise SystemExit(0)
        super().init_process()


# --- gunicorn settings (https://gunicorn.org/reference/settings/) ---
bind = ["127.0.0.1:8000"]
workers = _env_int("WEB_WORKERS", 2)
# Inherited by the workers, which read it in portal.settings.base: a bounded pool per process.
os.environ.setdefault("PORTAL_DATABASE_POOL_MAX", "16")
worker_class = "portal.gunicorn_conf.PortalUvicornWorker"
# Seconds a worker may stay silent before the master replaces it, and may take to finish at a stop.
timeout = 60
graceful_timeout = 10
# gunicorn's own access log stays off: uvicorn writes it (see above).
accesslog = None
# gunicorn's control socket (~/.gunicorn/gunicorn.ctl) would be shared by every instance of a user:
# the process manager (supervisord under runportal, systemd in production) is the control.
control_socket_disable = True


# --- Prometheus multiprocess mode (see the module's docstring; metrics/middleware.py) ---
_METRICS_DIRS_MADE: list[str] = []


def on_starting(server: Any) -> None:
    """Before any worker starts: one empty directory for their metric files, named in the environment the
    workers inherit (prometheus_client picks its file-backed values when a worker first imports it)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    else:
        path = tempfile.mkdtemp(prefix="vmportal-metrics-")
        _METRICS_DIRS_MADE.append(path)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


def child_exit(server: Any, worker: Any) -> None:
    """A worker ended: prometheus_client's clean-up of its live gauges (its counters and histograms stay)."""
    # Imported here, not at the top: the master must not import prometheus_client before on_starting has
    # set PROMETHEUS_MULTIPROC_DIR, or the forked workers would inherit its in-memory (per-process) values.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """The master ends: the directory it made goes (one named by the environment stays, wiped next start)."""
    while _METRICS_DIRS_MADE:
        shutil.rmtree(_METRICS_DIRS_MADE.pop(), ignore_errors=True)
