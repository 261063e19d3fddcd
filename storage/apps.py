from django.apps import AppConfig


class StorageConfig(AppConfig):
    name = "storage"
    verbose_name = "Storage"

    def ready(self) -> None:
        # Imported here, not at module level: receivers import models, which need the app registry.
        from cluster.signals import host_up

        from .receivers import ensure_pools

        host_up.connect(ensure_pools, dispatch_uid="storage.ensure_pools")
