from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        from . import doors  # the models need the app registry first

        doors.register()  # the collector (an observer), the rollup chore, the VM page's panel
