from django.apps import AppConfig


class ReportsConfig(AppConfig):
    name = "reports"
    verbose_name = "Reports"

    def ready(self) -> None:
        # Imported here, not at module level: the services import models, which need the app registry.
        from cluster.housekeeping import register_housekeeping

        from .services import idle_auto_stop

        # Off unless PORTAL_IDLE_AUTO_STOP is set (and then at most every IDLE_AUTO_STOP_EVERY_SECONDS).
        register_housekeeping("reports.idle_auto_stop", idle_auto_stop)
