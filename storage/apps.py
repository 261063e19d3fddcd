from django.apps import AppConfig


class StorageConfig(AppConfig):
    name = "storage"
    verbose_name = "Storage"

    def ready(self) -> None:
        # Imported here, not at module level: receivers and job handlers import models, which need the
        # app registry.
        from cluster.housekeeping import register_housekeeping
        from cluster.signals import host_registering, host_up
        from portal.jobs.labels import register_job_labels
        from quotas.usage import register_usage

        from . import jobs  # noqa: F401  (registers the image.build and image.import job handlers)
        from .receivers import ensure_pools, storage_dir_pool
        from .selectors import data_volume_quota_usage, image_quota_usage
        from .uploads import uploads_expire

        host_up.connect(ensure_pools, dispatch_uid="storage.ensure_pools")
        host_registering.connect(storage_dir_pool, dispatch_uid="storage.storage_dir_pool")
        register_job_labels({"image.build": "Build image", "image.import": "Import image"})
        register_usage(image_quota_usage)
        register_usage(data_volume_quota_usage)  # data disks (issue #11): their owner's or group's disk quota
        register_housekeeping("uploads_expire", uploads_expire)
        # --- storage domains (issue #11): capacity and use, refreshed on the monitor's turn ---
        from .domains import domains_refresh_due

        register_housekeeping("storage.domains_refresh", domains_refresh_due)
