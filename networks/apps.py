from django.apps import AppConfig


class NetworksConfig(AppConfig):
    name = "networks"
    verbose_name = "Networks"

    def ready(self) -> None:
        # Imported here, not at module level: receivers import models, which need the app registry.
        from cluster.signals import host_up

        from .receivers import ensure_networks

        host_up.connect(ensure_networks, dispatch_uid="networks.ensure_networks")
