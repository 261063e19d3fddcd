from django.apps import AppConfig


class StorageConfig(AppConfig):
    name = "storage"
    verbose_name = "Storage"

    def ready(self) -> None:
        # Imported here, not at module level: receivers and job handlers import models, which need the
        # app registry.
        from cluster.signals import host_up
        from portal.jobs.labels import register_job_labels

        from . import jobs  # noqa: F401  (registers the image.build job handler)
        from .receivers import ensure_pools

        host_up.connect(ensure_pools, dispatch_uid="storage.ensure_pools")
        register_job_labels({"image.build": "Build image"})
