"""Serve the portal: daphne (HTTP + websockets), the job worker and the hypervisor monitor.

On a real hypervisor these are separate processes. On libvirt's test driver (the demo fallback
where no hypervisor can be started) every process would see its own in-memory "hypervisor", so the
portal runs as one process instead: daphne in the main thread, the monitor in a thread, and jobs
run by Django's immediate task backend right after the request that queued them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

IMMEDIATE_BACKEND = "django.tasks.backends.immediate.ImmediateBackend"


class Command(BaseCommand):
    help = "Run daphne, the django-tasks-db worker and the hypervisor monitor until interrupted."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=2, help="Job worker processes.")
        parser.add_argument("--single-process", action="store_true",
                            help="Everything in this process (chosen automatically on libvirt's test driver).")

    def handle(self, *args, bind: str, port: int, workers: int, single_process: bool, **options):
        py = sys.executable
        manage = [py, "manage.py"]
        env = dict(os.environ)
        if single_process:
            return self._single_process(bind, port)
        if settings.LIBVIRT_URI.startswith("test:"):
            self.stdout.write(self.style.WARNING(
                f"{settings.LIBVIRT_URI} keeps its domains in one process's memory: running the portal as "
                "one process (jobs run right after each request)."))
            env["PORTAL_TASKS_BACKEND"] = IMMEDIATE_BACKEND
            commands = {"portal": [*manage, "runportal", "--single-process", "--bind", bind, "--port", str(port)]}
        else:
            # portal.serve: daphne with its access log through settings.LOGGING (tokens redacted)
            commands = {"web": [py, "-m", "portal.serve", "-b", bind, "-p", str(port), "portal.asgi:application"]}
            for n in range(workers):
                commands[f"worker{n + 1}"] = [*manage, "db_worker", "--no-startup-delay", "--no-reload"]
            commands["monitor"] = [*manage, "hypervisor_monitor"]
        procs: dict[str, subprocess.Popen] = {}
        for name, cmd in commands.items():
            procs[name] = subprocess.Popen(cmd, env=env)
            self.stdout.write(f"started {name} (pid {procs[name].pid})")
        self.stdout.write(self.style.SUCCESS(f"Portal on http://{bind}:{port}/  (Ctrl-C stops)"))
        stopping = {"flag": False}

        def stop(*_):
            stopping["flag"] = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        code = 0
        while not stopping["flag"]:
            for name, p in procs.items():
                if p.poll() is not None:
                    self.stderr.write(f"{name} exited with {p.returncode}; stopping the portal")
                    stopping["flag"] = True
                    code = p.returncode or 1
            time.sleep(0.5)
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
        if code:
            sys.exit(code)

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
