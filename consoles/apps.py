from django.apps import AppConfig


class ConsolesConfig(AppConfig):
    name = "consoles"
    verbose_name = "Consoles"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system check)
