"""Reconcile now: VM states from libvirt, foreign domains listed, stale jobs reaped."""

from django.core.management.base import BaseCommand

from cluster.housekeeping import housekeeping_run
from cluster.leadership import CHORES, MonitorLocks
from cluster.services import host_sync_all
from portal.jobs import jobs_reap_stale


class Command(BaseCommand):
    help = ("Repair VM states from what libvirt says, list foreign domains, reap stale jobs and run the "
            "apps' housekeeping (expired uploads removed).")

    def handle(self, *args, **options):
        for result in host_sync_all():
            self.stdout.write(", ".join(f"{k}={v}" for k, v in result.items()))
        locks = MonitorLocks()
        try:
            if not locks.acquire(CHORES):  # the chores run once cluster-wide: by the leading monitor
                self.stdout.write("chores skipped: a running hypervisor monitor leads and runs them")
                return
            for job in jobs_reap_stale():
                self.stdout.write(f"job {job.pk} ({job.kind}) lost its worker: now {job.status}")
            for name, result in housekeeping_run().items():
                self.stdout.write(f"{name}: {result}")
        finally:
            locks.close()
