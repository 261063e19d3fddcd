from django.apps import AppConfig


class BackupsConfig(AppConfig):
    name = "backups"
    verbose_name = "Backups"

    def ready(self) -> None:
        # Imported here, not at module level: they import models, which need the app registry.
        from cluster.housekeeping import register_housekeeping
        from portal.jobs.labels import register_job_labels
        from portal.jobs.selectors import register_target_visibility
        from quotas.usage import register_usage
        from storage.usage import register_pool_users
        from vms.services import register_exclusive_job_kinds

        from . import doors, jobs
        from .selectors import backup_owned_ids, backup_pool_users, backup_quota_usage

        register_usage(backup_quota_usage)
        register_job_labels(jobs.JOB_LABELS)
        register_target_visibility("backup", lambda user: backup_owned_ids(user=user))
        register_housekeeping("backups.schedules", jobs.backups_housekeeping)
        register_pool_users(backup_pool_users)  # a backup domain holding backups cannot be removed
        doors.register()  # the `manage.py vm` verbs and the VM page's Backups panel
        # A VM being copied for a backup or restored is not started or deleted until the job ends.
        register_exclusive_job_kinds("backup.create", "backup.restore")
