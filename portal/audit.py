"""The audit trail: one function every service calls."""

from __future__ import annotations

from typing import Any

from .models import AuditEvent, Job


def audit(*, actor: Any, via: str, action: str, target: Any = None, target_type: str = "",
          target_id: str = "", target_name: str = "", outcome: str = AuditEvent.Outcome.SUCCEEDED,
          message: str = "", job: Job | None = None, data: dict | None = None) -> AuditEvent:
    """Record who did what through which door; `target` may be any model with a name."""
    if target is not None:
        target_type = target_type or target._meta.model_name
        target_id = target_id or str(target.pk)
        target_name = target_name or str(getattr(target, "name", target))
    user = actor if getattr(actor, "pk", None) else None
    return AuditEvent.objects.create(
        actor=user,
        actor_name=(actor.get_username() if user else str(actor or "system")),
        via=via,
        action=action,
        target_type=target_type,
        target_id=target_id,
        target_name=target_name,
        outcome=outcome,
        message=message,
        job=job,
        data=data or {},
    )
