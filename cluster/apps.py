from django.apps import AppConfig


class ClusterConfig(AppConfig):
    name = "cluster"
    verbose_name = "Hosts and placement"

    def ready(self) -> None:
        # Registers the scheduler's start-up check (plugin name clashes, unknown policy parts); imported
        # here because the registry reads settings and the models' modules. /readyz reports the enabled
        # hosts (cluster.health reads models too).
        from portal.health import register_readiness_check

        from .health import hosts_ready
        from .scheduler import registry  # noqa: F401

        register_readiness_check("hosts", hosts_ready)
