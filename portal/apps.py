from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Portal"

    def ready(self) -> None:
        # Imported here: both need the app registry (axes' models, the audit model).
        from axes.signals import user_locked_out

        from . import checks  # noqa: F401  (registers the deploy checks)
        from .login_guard import audit_locked_out

        user_locked_out.connect(audit_locked_out, dispatch_uid="portal.login_guard.audit_locked_out")
