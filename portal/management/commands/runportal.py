"""Serve the portal: the web tier, the django-tasks-db job workers and the hypervisor monitor, supervised.

On a real hypervisor these are separate processes kept by supervisord (run in the foreground with a
configuration written to `<run dir>/supervisord.conf`, logs in `<run dir>/log/`): a process that dies is
started again (with supervisord's backoff while it keeps failing at start-up) instead of stopping the
portal; Ctrl-C or SIGTERM stops every process cleanly. This command becomes supervisord (exec), so its
PID is the supervisor's. The web tier is gunicorn with PORTAL_WEB_WORKERS uvicorn workers
(portal.gunicorn_conf); production runs the same commands under systemd (docs/deployment.md).

On libvirt's test driver (the demo fallback where no hypervisor can be started) every process would see
its own in-memory "hypervisor", so the portal runs as one process instead: daphne (portal.serve) in the
main thread, the monitor in a thread, and jobs run by Django's immediate task backend right after the
request that queued them.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import sys
import threading
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

IMMEDIATE_BACKEND = "django.tasks.backends.immediate.ImmediateBackend"

# supervisord: a program that dies within STARTSECS of its start counts as a failed start, retried after
# 1, 2, 3 ... s up to STARTRETRIES times (then it stays FATAL, visible in `supervisorctl status`);
# one that dies later is started again at once.
STARTSECS = 5
STARTRETRIES = 10
# Seconds a stop waits before SIGKILL: a job worker finishes its current job first (a killed job is
# retried by the monitor's reaper, portal.jobs.jobs_reap_stale).
STOPWAIT = {"web": 15, "worker": 60, "monitor": 15}


def _p(value: str | os.PathLike) -> str:
    """A path for supervisord's configuration, with `%` escaped (supervisord expands `%(name)s`)."""
    return str(value).replace("%", "%%")


def _q(value: str | os.PathLike) -> str:
    """A word of a supervisord `command=`: shell-quoted (supervisord splits it like a shell), `%` escaped."""
    return _p(shlex.quote(str(value)))


def supervisor_config(*, run_dir: Path, base_dir: Path, python: str, bind: str, port: int, workers: int,
                      web_workers: int, secret: str) -> str:
    """supervisord's configuration for the portal's processes (web, `workers` job workers, monitor).

    Its control socket (for supervisorctl) is the owner's only (mode 0700) and asks for `secret` too.
    """
    log_dir = run_dir / "log"
    host = f"[{bind}]" if ":" in bind and not bind.startswith("[") else bind
    manage = f"{_q(python)} {_q(base_dir / 'manage.py')}"
    programs = {
        "web": f"{_q(python)} -m gunicorn -c python:portal.gunicorn_conf -b {_q(f'{host}:{port}')} "
               f"-w {web_workers} portal.asgi:application",
        "worker": f"{manage} db_worker --no-startup-delay --no-reload",
        "monitor": f"{manage} hypervisor_monitor",
    }
    if workers < 1:
        del programs["worker"]
    lines = [
        "; Written by `manage.py runportal` at every start: edit runportal, not this file.",
        "[supervisord]",
        "nodaemon=true",
        f"logfile={_p(log_dir / 'supervisord.log')}",
        "logfile_maxbytes=10MB",
        "logfile_backups=3",
        f"pidfile={_p(run_dir / 'supervisord.pid')}",
        f"childlogdir={_p(log_dir)}",
        f"directory={_p(base_dir)}",
        *(["user=root"] if os.geteuid() == 0 else []),  # said, so supervisord does not warn that it is root
        "",
        "[unix_http_server]",
        f"file={_p(run_dir / 'supervisor.sock')}",
        "chmod=0700",
        "username=portal",
        f"password={secret}",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{_p(run_dir / 'supervisor.sock')}",
        "username=portal",
        f"password={secret}",
    ]
    # Each program ends with supervisord (Linux's parent-death signal, set by util-linux's setpriv before it
    # execs the program: same PID): a supervisord killed with SIGKILL leaves no web, worker or monitor behind
    # to hold the port or run a second monitor next to the next runportal's.
    setpriv = shutil.which("setpriv")
    deathsig = f"{_q(setpriv)} --pdeathsig TERM -- " if setpriv else ""
    for name, command in programs.items():
        lines += ["", f"[program:{name}]", f"command={deathsig}{command}", f"directory={_p(base_dir)}",
                  "autostart=true", "autorestart=true", f"startsecs={STARTSECS}", f"startretries={STARTRETRIES}",
                  "stopsignal=TERM", f"stopwaitsecs={STOPWAIT[name]}", "killasgroup=true",
                  "redirect_stderr=true", "stdout_logfile_maxbytes=10MB", "stdout_logfile_backups=3"]
        if name == "worker":
            lines += [f"numprocs={workers}", "numprocs_start=1", "process_name=worker-%(process_num)d",
                      f"stdout_logfile={_p(log_dir / 'worker-')}%(process_num)d.log"]
        else:
            lines += [f"stdout_logfile={_p(log_dir / f'{name}.log')}"]
    return "\n".join(lines) + "\n"


class Command(BaseCommand):
    help = "Run the web tier, the job workers and the hypervisor monitor under supervisord until interrupted."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=2, help="Job worker processes (default 2).")
        parser.add_argument("--web-workers", type=int, default=settings.WEB_WORKERS,
                            help="Web processes sharing the port (default PORTAL_WEB_WORKERS, 2).")
        parser.add_argument("--run-dir", default=settings.DATA_DIR,
                            help="Where supervisord's configuration, socket and log/ go (default var/).")
        parser.add_argument("--single-process", action="store_true",
                            help="Everything in this process (chosen automatically on libvirt's test driver).")

    def handle(self, *args, bind: str, port: int, workers: int, web_workers: int, run_dir: str,
               single_process: bool, **options):
        py = sys.executable
        if single_process:
            return self._single_process(bind, port)
        if settings.LIBVIRT_URI.startswith("test:"):
            self.stdout.write(self.style.WARNING(
                f"{settings.LIBVIRT_URI} keeps its domains in one process's memory: running the portal as "
                "one process (jobs run right after each request)."))
            self.stdout.flush()
            os.environ["PORTAL_TASKS_BACKEND"] = IMMEDIATE_BACKEND  # read when the new process loads settings
            os.execv(py, [py, str(Path(settings.BASE_DIR) / "manage.py"), "runportal", "--single-process",
                          "--bind", bind, "--port", str(port)])
        if web_workers < 1 or workers < 0:
            raise CommandError("--web-workers must be 1 or more and --workers 0 or more.")
        if web_workers > 1 and not settings.CHANNEL_LAYERS["default"]["BACKEND"].startswith("channels_redis"):
            self.stdout.write(self.style.WARNING(
                "Several web processes without PORTAL_REDIS_URL: live updates still arrive (each page polls "
                "the database), but serial console watchers only see the process they are connected to."))
        root = Path(run_dir).resolve()
        (root / "log").mkdir(parents=True, exist_ok=True)
        conf = root / "supervisord.conf"
        conf.touch(mode=0o600)
        conf.chmod(0o600)  # it holds the control socket's password
        conf.write_text(supervisor_config(run_dir=root, base_dir=Path(settings.BASE_DIR), python=py, bind=bind,
                                          port=port, workers=workers, web_workers=web_workers,
                                          secret=secrets.token_hex(16)))
        ctl = f"{Path(py).parent / 'supervisorctl'} -c {conf}"
        self.stdout.write(self.style.SUCCESS(f"Portal on http://{bind}:{port}/  (Ctrl-C stops)"))
        self.stdout.write(f"{web_workers} web process(es), {workers} job worker(s), the monitor; supervised "
                          f"by supervisord.\nLogs: {root / 'log'}/ (web.log, worker-N.log, monitor.log, "
                          f"supervisord.log)\nStatus: {ctl} status")
        self.stdout.flush()
        os.execv(py, [py, "-m", "supervisor.supervisord", "-c", str(conf)])

    def _single_process(self, bind: str, port: int) -> None:
        from portal.serve import main as serve  # loads daphne: only the single-process mode needs it here

        if settings.TASKS["default"]["BACKEND"] != IMMEDIATE_BACKEND:
            raise CommandError("--single-process runs no job worker: it needs "
                               f"PORTAL_TASKS_BACKEND={IMMEDIATE_BACKEND} (runportal sets it by itself on "
                               "libvirt's test driver).")

        from cluster.monitor import monitor_run  # the monitor thread exists only in single-process mode

        stopping = threading.Event()
        monitor = threading.Thread(
            target=monitor_run, name="hypervisor-monitor", daemon=True,
            kwargs={"interval": settings.RECONCILE_SECONDS, "should_stop": stopping.is_set})
        monitor.start()
        try:
            serve(["-b", bind, "-p", str(port), "portal.asgi:application"])
        finally:
            stopping.set()
            monitor.join(timeout=3)
