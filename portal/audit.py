"""The audit trail: one function every service calls."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from .models import AuditEvent, Job

# Facts about the door an action came through (e.g. the Slack user and channel), added by the
# adapter around its service call so every audit row written inside carries them in `data`.
_context: ContextVar[dict[str, Any] | None] = ContextVar("audit_context", default=None)


@contextmanager
def audit_context(**data: Any) -> Iterator[None]:
    """Add `data` to the `data` of every audit row written inside the block (this thread/task)."""
    token = _context.set({**(_context.get() or {}), **data})
    try:
        yield
    finally:
        _context.reset(token)


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
        data={**(_context.get() or {}), **(data or {})},
    )
