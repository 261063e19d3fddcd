from django.apps import AppConfig


class ClusterConfig(AppConfig):
    name = "cluster"
    verbose_name = "Hosts and placement"

    def ready(self) -> None:
        # Registers the scheduler's start-up check (plugin name clashes, unknown policy parts); imported
        # here because the registry reads settings and the models' modules. /readyz reports the enabled
        # hosts (cluster.health reads models too). External plugins may attach jobs to hosts (portal.plugins).
        from portal.health import register_readiness_check
        from portal.plugins import register_plugin_target

        from .health import hosts_ready
        from .scheduler import registry  # noqa: F401
        from .selectors import host_for_plugin

        register_readiness_check("hosts", hosts_ready)
        register_plugin_target("host", host_for_plugin)
