"""Which jobs a user may see: the ones they started, and the ones acting on what they may see.

The core knows jobs, not VMs: each app whose objects are job targets registers, per target type,
which of its objects a user may see (vms does for "vm", in its AppConfig.ready).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

from django.db.models import CharField, Count, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Cast, Coalesce

from portal.actors import Actor, is_admin, is_signed_in
from portal.exceptions import NotFound
from portal.models import Job

# target type -> function(user) giving the ids of the targets whose jobs the user may see
_target_visibility: dict[str, Callable[[Any], Iterable[Any]]] = {}


def register_target_visibility(target_type: str, visible_ids: Callable[[Any], Iterable[Any]]) -> None:
    """Let users see the jobs on targets of `target_type` whose ids `visible_ids(user)` gives."""
    _target_visibility[target_type] = visible_ids


def job_visible(*, user: Actor) -> QuerySet[Job]:
    """Jobs `user` may see: their own, those on targets they may see, all for staff."""
    qs = Job.objects.select_related("actor", "plugin")
    if not is_signed_in(user):
        return qs.none()
    if is_admin(user):
        return qs
    visible = Q(actor=user)
    for target_type, visible_ids in _target_visibility.items():
        visible |= Q(target_type=target_type, target_id__in=_as_text(visible_ids(user)))
    return qs.filter(visible)


def _as_text(ids: Iterable[Any]) -> Any:
    """Target ids as `Job.target_id` holds them (text). A queryset of ids stays a subquery of the jobs query
    (issue #13: a user with 2,000 VMs made a list of 2,000 ids per request); other iterables become a list."""
    if isinstance(ids, QuerySet):
        return ids.order_by().values_list(Cast("pk", output_field=CharField()), flat=True)
    return [str(pk) for pk in ids]


def job_get(*, user: Actor, job_id: object) -> Job:
    """One job the user may see, by id; others' jobs are indistinguishable from missing ones."""
    try:
        return job_visible(user=user).get(pk=uuid.UUID(str(job_id)))
    except (Job.DoesNotExist, ValueError):
        raise NotFound(f"Job {str(job_id)[:40]} not found.") from None


def job_find(*, actor: Actor, job_id: object) -> Job:
    """`job_get` for a door that may act as the system itself (actor None: the shell's administrator sees
    every job); a user sees what `job_visible` gives them."""
    if actor is not None:
        return job_get(user=actor, job_id=job_id)
    try:
        return Job.objects.select_related("actor", "plugin").get(pk=uuid.UUID(str(job_id)))
    except (Job.DoesNotExist, ValueError):
        raise NotFound(f"Job {str(job_id)[:40]} not found.") from None


def with_children_count(qs: QuerySet[Job]) -> QuerySet[Job]:
    """`children_count` on each job: how many jobs it is the parent of (a batch; one subquery per row, on the
    parent's index)."""
    counts = (Job.objects.filter(parent_id=OuterRef("pk")).order_by().values("parent_id")
              .annotate(n=Count("pk")).values("n"))
    return qs.annotate(children_count=Coalesce(Subquery(counts, output_field=IntegerField()), 0))
