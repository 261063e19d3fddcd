"""`manage.py report`: usage reports and idle VMs from the command line (the reports services' CLI door).

    manage.py report usage --by user|group|host [--from 2026-11-01] [--to 2026-11-30] [--top N] [--format table|csv]
    manage.py report idle [--cpu-pct 5] [--days 3] [--format table|csv]
    manage.py report idle --stop --as ADMIN [--vm ID ...] [--cpu-pct 5] [--days 3]

Reading runs as the system (whoever can run manage.py is an operator); stopping is recorded in the audit under
the administrator named with --as. Errors go to stderr with the exit status of their kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.choices import Via
from portal.exceptions import NotFound, PortalError, user_message
from reports.services import idle_vms_stop
from reports.tables import IDLE_HEADER, USAGE_HEADER, idle_csv, idle_lines, usage_csv, usage_lines
from reports.usage import BY_CHOICES, idle_vms, period_parse, usage_report


class Command(BaseCommand):
    help = "Usage per user, group or host over a period; idle VMs, and stopping them."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="what", required=True)
        usage = sub.add_parser("usage", help="VM-hours, vCPU-hours, GiB-hours and peaks against quota.")
        usage.add_argument("--by", choices=BY_CHOICES, default="user")
        usage.add_argument("--from", dest="start", help="A date or ISO date-time (default: 7 days before --to).")
        usage.add_argument("--to", dest="end", help="A date (that day included) or ISO date-time (default: now).")
        usage.add_argument("--top", type=int, help="Only the first N rows (largest vCPU-hours first).")
        usage.add_argument("--format", choices=("table", "csv"), default="table")
        idle = sub.add_parser("idle", help="Running VMs with low CPU for days.")
        idle.add_argument("--cpu-pct", type=float, help="Threshold in percent (default: PORTAL_IDLE_CPU_PCT).")
        idle.add_argument("--days", type=float, help="How many days back (default: PORTAL_IDLE_DAYS).")
        idle.add_argument("--format", choices=("table", "csv"), default="table")
        idle.add_argument("--stop", action="store_true", help="Stop them (each a vm.stop job).")
        idle.add_argument("--vm", type=int, action="append", dest="vms", help="Stop only this VM (repeatable).")
        idle.add_argument("--as", dest="as_user", help="The administrator the stops are recorded under.")

    def handle(self, *args: object, what: str, **opts: object) -> None:
        try:
            if what == "usage":
                self._usage(**opts)
            else:
                self._idle(**opts)
        except PortalError as exc:
            raise CommandError(user_message(exc), returncode=exc.exit_code) from None

    def _usage(self, *, by: str, start: str | None, end: str | None, top: int | None, format: str,
               **_: object) -> None:
        report = usage_report(actor=None, by=by, period=period_parse(start=start, end=end))
        if top:
            report = replace(report, rows=report.rows[:top])
        if format == "csv":
            self.stdout.write(usage_csv(report), ending="")
            return
        lines = usage_lines(report)
        self.stdout.write(f"Usage by {by}, {report.period.start:%Y-%m-%d %H:%M} to {report.period.end:%Y-%m-%d %H:%M} "
                          f"({', '.join(f'{p.resolution or "no data"}' for p in report.plan)})")
        self._table(USAGE_HEADER[:7], [line[:7] for line in lines])
        t = report.totals
        self.stdout.write(f"Total: {t['vm_hours']:.2f} VM-hours, {t['vcpu_hours']:.2f} vCPU-hours, "
                          f"{t['memory_gib_hours']:.2f} GiB-hours memory, {t['disk_gib_hours']:.2f} GiB-hours disk")

    def _idle(self, *, cpu_pct: float | None, days: float | None, format: str, stop: bool,
              vms: list[int] | None, as_user: str | None, **_: object) -> None:
        if stop:
            if not as_user:
                raise CommandError("--stop needs --as ADMIN: the administrator the stops are recorded under.")
            admin = User.objects.filter(username=as_user).first()
            if admin is None:
                raise CommandError(f"No user {as_user!r}.", returncode=NotFound.exit_code)
            for result in idle_vms_stop(actor=admin, via=Via.CLI, vm_ids=vms, cpu_pct=cpu_pct, days=days):
                self.stdout.write(f"{'stopping' if result.stopped else 'left alone'}: {result.message}"
                                  + (f" (job {result.job_id})" if result.job_id else ""))
            return
        items = idle_vms(actor=None, cpu_pct=cpu_pct, days=days)
        if format == "csv":
            self.stdout.write(idle_csv(items), ending="")
            return
        self._table(IDLE_HEADER, idle_lines(items))
        self.stdout.write(f"{len(items)} idle VM(s).")

    def _table(self, header: Sequence[str], lines: Sequence[Sequence[object]]) -> None:
        cells = [[str(h) for h in header]] + [["" if v is None else str(v) for v in line] for line in lines]
        widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
        for row in cells:
            self.stdout.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())

