from django.apps import AppConfig


class ConsolesConfig(AppConfig):
    name = "consoles"
    verbose_name = "Consoles"

    def ready(self) -> None:
        # Imported here, not at module level: services import models, which need the app registry.
        from vms.specs import register_spec_contributor

        from .services import console_domain_spec

        register_spec_contributor(console_domain_spec)
