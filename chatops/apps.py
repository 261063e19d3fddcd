from django.apps import AppConfig


class ChatopsConfig(AppConfig):
    name = "chatops"
    verbose_name = "ChatOps (Slack)"

    def ready(self) -> None:
        # Imported here, not at module level: these import models, which need the app registry.
        from django.db.models.signals import post_save

        from portal.jobs import job_finished
        from portal.models import AuditEvent
        from quotas.services import quota_request_created, quota_request_decided
        from vms.leases import lease_expired, lease_reminder

        from . import checks, notifications, services, slack  # noqa: F401  (checks and setting_changed register)

        job_finished.connect(notifications.on_job_finished, dispatch_uid="chatops.job_finished")
        post_save.connect(notifications.on_audit_event, sender=AuditEvent, dispatch_uid="chatops.audit_event")
        quota_request_created.connect(notifications.on_quota_request_created,
                                      dispatch_uid="chatops.quota_request_created")
        quota_request_decided.connect(notifications.on_quota_request_decided,
                                      dispatch_uid="chatops.quota_request_decided")
        services.identity_link_refused.connect(notifications.on_identity_link_refused,
                                               dispatch_uid="chatops.identity_link_refused")
        lease_reminder.connect(notifications.on_lease_reminder, dispatch_uid="chatops.lease_reminder")
        lease_expired.connect(notifications.on_lease_expired, dispatch_uid="chatops.lease_expired")
