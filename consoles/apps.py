from django.apps import AppConfig


class ConsolesConfig(AppConfig):
    name = "consoles"
    verbose_name = "Consoles"

    def ready(self) -> None:
        # Imported here, not at module level: these import models, which need the app registry.
        from vms.management.commands.vm import register_verb
        from vms.specs import register_spec_contributor

        from . import checks, cli  # noqa: F401  (importing checks registers the system check)
        from .services import console_domain_spec

        register_spec_contributor(console_domain_spec)
        register_verb("console", help=cli.HELP, add_arguments=cli.add_arguments, run=cli.run)
