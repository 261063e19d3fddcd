"""Serve the portal: daphne (HTTP + websockets), the job worker and the hypervisor monitor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run daphne, the django-tasks-db worker and the hypervisor monitor until interrupted."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=2, help="Job worker processes.")

    def handle(self, *args, bind: str, port: int, workers: int, **options):
        py = sys.executable
        manage = [py, "manage.py"]
        env = dict(os.environ)
        commands = {"web": [py, "-m", "daphne", "-b", bind, "-p", str(port), "portal.asgi:application"]}
        for n in range(workers):
            commands[f"worker{n + 1}"] = [*manage, "db_worker", "--no-startup-delay"]
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
