from django.apps import AppConfig


class BackupsConfig(AppConfig):
    name = "backups"
    verbose_name = "Backups"

    def ready(self) -> None:
        # Registrations (quota usage, job labels, housekeeping) are added here by the backups work.
        pass
