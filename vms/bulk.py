"""Bulk creation (issue #14): N VMs from one image or template in one request.

One set of rules with vm_create (`vms.services.vm_create_plan`: who for, size, image, group, networks; each
name validated), then one record phase: the quota of the WHOLE batch is checked under the quota row lock —
all or nothing, or with `partial=True` as many as the quota and the hosts allow — and every VM is recorded
with its own `vm.create` job, a child of one parent job (`vm.bulk_create`, portal.jobs.job_create_parent).
The children start at most BULK_PARALLELISM at once (portal.jobs' batch gate); the parent's progress is the
share of children finished, and it finishes with the last of them.

Names come from a pattern such as `lab-{n:02}`: the only field is `n`, with an integer format spec (fill
zeros and a width), no attribute or index access, no conversion; `{n}` is required when more than one VM
is asked for. An idempotency key makes a retried request answer with the same parent job and create
nothing new; the same key with other parameters is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import IntegrityError, transaction
from django.utils import timezone

from cluster.scheduler import NoHostAvailable
from networks.models import Network
from portal.actors import Actor
from portal.audit import audit
from portal.exceptions import Conflict, IdempotencyKeyReused, PermissionDenied, ValidationFailed
from portal.jobs import job_create_parent
from portal.models import AuditEvent, Job
from quotas.selectors import quota_usage
from quotas.services import quota_reserve
from storage.models import Image

from .choices import VMStatus
from .models import VM, Flavor, IdempotencyKey
from .services import (
    CreatePlan,
    NetworkKey,
    _check_actor,
    capacity_short,
    vm_create_lock,
    vm_create_plan,
    vm_create_record,
)

BULK_JOB = "vm.bulk_create"
PATTERN_FIELD = "n"
# An integer format spec: optional zero fill and a width (e.g. "02", "3", "d", "03d"); nothing else.
_SPEC_RE = re.compile(r"^0?[0-9]{0,2}d?$")
KEY_MAX = 200
KEY_RE = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces (what HTTP header values carry)


@dataclass(frozen=True)
class BulkResult:
    """What a bulk request did: the parent job, the VMs recorded (none on a replay), how many were asked
    for, and why fewer were made (partial), or that this was a replay of an earlier request."""

    job: Job
    requested: int
    created: int
    vms: list[VM] = field(default_factory=list)
    why_fewer: str = ""
    replayed: bool = False

    @property
    def message(self) -> str:
        if self.replayed:
            return f"This request was already made: job {self.job.pk} ({self.created} of {self.requested} VMs)."
        text = f"Creating {self.created} of {self.requested} VMs" if self.created != self.requested else \
            f"Creating {self.created} VM{'s' if self.created != 1 else ''}"
        return text + (f" ({self.why_fewer})" if self.why_fewer else "") + "."


def bulk_names(pattern: object, *, count: int, start_number: object = 1) -> list[str]:
    """The names of a batch from `pattern` (e.g. "lab-{n:02}" with count 3: lab-01, lab-02, lab-03). Only the
    field `n` with an integer spec is allowed; each name must then pass the VM name rule (vm_create_plan)."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise ValidationFailed("Name pattern is required (e.g. lab-{n:02}).", field="name_pattern")
    if len(pattern) > 200:
        raise ValidationFailed("Name pattern is too long (at most 200 characters).", field="name_pattern")
    first = _whole(start_number, "start_number", "Start number", minimum=0)
    try:
        parts = list(string.Formatter().parse(pattern))
    except ValueError as exc:  # an unmatched brace
        raise ValidationFailed(f"Invalid name pattern {pattern[:70]!r}: {exc}; write {{n}} for the number "
                               "(and {{ }} for a literal brace).", field="name_pattern") from None
    specs: list[str | None] = []
    for _literal, name, spec, conversion in parts:
        if name is None:
            specs.append(None)
            continue
        if name != PATTERN_FIELD:
            raise ValidationFailed(f"Invalid name pattern {pattern[:70]!r}: the only field is {{n}} (the VM's "
                                   f"number), not {{{name[:20]}}}.", field="name_pattern")
        if conversion is not None or not _SPEC_RE.fullmatch(spec or ""):
            raise ValidationFailed(f"Invalid name pattern {pattern[:70]!r}: {{n}} takes an integer format such "
                                   "as {n:02} (zero-filled to 2 digits), nothing else.", field="name_pattern")
        specs.append(spec or "")
    if count > 1 and all(s is None for s in specs):
        raise ValidationFailed(f"The name pattern needs {{n}} to number {count} VMs (e.g. {pattern[:40]}-{{n}}).",
                               field="name_pattern")
    names = []
    for number in range(first, first + count):
        names.append("".join(literal + ("" if spec is None else format(number, spec))
                             for (literal, _n, _s, _c), spec in zip(parts, specs, strict=True)))
    return names


def _whole(value: object, field_name: str, label: str, *, minimum: int) -> int:
    if isinstance(value, bool):
        raise ValidationFailed(f"{label} must be a whole number.", field=field_name)
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise ValidationFailed(f"{label} must be a whole number.", field=field_name) from None
    if number < minimum:
        raise ValidationFailed(f"{label} must be at least {minimum}.", field=field_name)
    return number


def bulk_count(count: object) -> int:
    """The number of VMs asked for: 1 to BULK_MAX_COUNT."""
    number = _whole(count, "count", "Count", minimum=1)
    if number > settings.BULK_MAX_COUNT:
        raise ValidationFailed(f"At most {settings.BULK_MAX_COUNT} VMs in one request (asked for {number}).",
                               field="count")
    return number


def validate_idempotency_key(key: object) -> str | None:
    if key in (None, ""):
        return None
    if not isinstance(key, str) or not KEY_RE.fullmatch(key):
        raise ValidationFailed(f"An idempotency key is 1–{KEY_MAX} printable characters without spaces.",
                               field="idempotency_key")
    return key


def _fingerprint(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


def _key_of(value: object) -> object:
    """A parameter as the fingerprint keeps it (objects by their primary key)."""
    if isinstance(value, (Image, Flavor, Group, User)):
        return f"{type(value).__name__}:{value.pk}"
    if isinstance(value, (list, tuple)):
        return [_key_of(v) for v in value]
    return value


def _replay(*, actor: User, key: str, fingerprint: str) -> BulkResult | None:
    """The earlier request of this key (None: none within the TTL); the same key with other parameters is
    refused."""
    since = timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_TTL_SECONDS)
    IdempotencyKey.objects.filter(created_at__lt=since).delete()  # expired keys (any user's) are forgotten
    found = IdempotencyKey.objects.select_related("job").filter(user=actor, key=key).first()
    if found is None:
        return None
    if found.fingerprint != fingerprint:
        raise IdempotencyKeyReused("This idempotency key was already used for a different request; send the same "
                                   "parameters to repeat it, or use a new key for a new request.")
    job = found.job
    if job is None:  # its job was deleted: the key still stands for that request
        raise Conflict("This idempotency key's request is gone (its job was deleted); use a new key.")
    return BulkResult(job=job, requested=int(job.result.get("requested", 0)),
                      created=int(job.result.get("created", 0)), why_fewer=str(job.result.get("why_fewer", "")),
                      replayed=True)


def _fit(plan: CreatePlan, count: int) -> tuple[int, str]:
    """How many VMs of the plan fit the (locked) quota, and what limits them."""
    quota = quota_reserve(user=plan.owner, group=plan.group, vcpus=0, memory_mib=0, disk_gib=0, vms=0)  # the lock
    per_vm = {"vms": 1, "vcpus": plan.vcpus, "memory_mib": plan.memory_mib, "disk_gib": plan.disk_gib}
    fit, why = count, ""
    for usage in quota_usage(user=plan.owner, group=plan.group, quota=quota):
        need = per_vm.get(usage.resource)
        if not need:
            continue
        room = max(0, (usage.limit - usage.used) // need)
        if room < fit:
            unit = f" {usage.unit}" if usage.unit else ""
            fit, why = room, (f"quota: {usage.label} {usage.used}{unit} of {usage.limit}{unit} in use, "
                              f"{need}{unit} per VM")
    return fit, why


def vm_bulk_create(*, actor: Actor, via: str, count: object, name_pattern: object, start_number: object = 1,
                   image: Image | str | int | None = None, flavor: Flavor | str | None = None, vcpus: object = None,
                   memory_mib: object = None, disk_gib: object = None, description: str = "",
                   group: Group | str | None = None, owner: User | str | None = None,
                   networks: Iterable[NetworkKey] | None = None, user_data: str = "", clone: str | None = None,
                   storage_domain: str | None = None, start: bool = True, partial: bool = False,
                   idempotency_key: object = None, lease_days: object = None,
                   expires_at: object = None) -> BulkResult:
    """Record `count` VMs named by `name_pattern` with one parent job, or none at all (all or nothing; with
    `partial`, as many as fit, saying why not more). A replay of the same user's `idempotency_key` with the
    same parameters returns the first request's result (`replayed`) and creates nothing. `lease_days` /
    `expires_at`: each VM's lease, as vm_create takes it (None: the group's default, vms.leases)."""
    user = _check_actor(actor)
    if networks is not None and not isinstance(networks, (str, Network)):
        networks = list(networks)  # read once: the fingerprint and the plan both need it
    key = validate_idempotency_key(idempotency_key)
    n = bulk_count(count)
    names = bulk_names(name_pattern, count=n, start_number=start_number)
    params = {
        "count": n, "name_pattern": name_pattern, "start_number": start_number, "image": image, "flavor": flavor,
        "vcpus": vcpus, "memory_mib": memory_mib, "disk_gib": disk_gib, "description": description,
        "group": group, "owner": owner, "networks": networks,
        "user_data": user_data, "clone": clone, "storage_domain": storage_domain, "start": bool(start),
        "partial": bool(partial)}
    # The lease only when given: a request without one keeps the fingerprint it had before leases.
    params.update({k: v for k, v in (("lease_days", lease_days), ("expires_at", expires_at)) if v is not None})
    fingerprint = _fingerprint({k: _key_of(v) for k, v in params.items()})
    if key is not None:
        earlier = _replay(actor=user, key=key, fingerprint=fingerprint)
        if earlier is not None:
            return earlier
    owner = _resolve_owner(actor=user, owner=owner)
    try:
        plan = vm_create_plan(actor=user, names=names, image=image, flavor=flavor, vcpus=vcpus,
                              memory_mib=memory_mib, disk_gib=disk_gib, description=description, group=group,
                              owner=owner, networks=networks, user_data=user_data, clone=clone,
                              storage_domain=storage_domain, lease_days=lease_days, expires_at=expires_at)
    except ValidationFailed as exc:
        if "name" not in exc.errors:
            raise
        # A name made from the pattern: the pattern is what the caller typed (and what a form shows it next to).
        errors = {("name_pattern" if k == "name" else k): v for k, v in exc.errors.items()}
        raise ValidationFailed(errors) from None
    if len(set(plan.names)) != len(plan.names):
        raise ValidationFailed("The name pattern gives the same name twice.", field="name_pattern")
    try:
        return _record(plan, via=via, count=n, start=start, partial=partial, key=key, fingerprint=fingerprint,
                       pattern=str(name_pattern))
    except NoHostAvailable as exc:  # recorded after the rollback: power saving wakes a standby host
        capacity_short(reason=exc.message)
        raise
    except IntegrityError:
        if key is not None:  # a twin request with this key committed first: answer as its replay
            earlier = _replay(actor=user, key=key, fingerprint=fingerprint)
            if earlier is not None:
                return earlier
        raise ValidationFailed(f"{plan.whose} a VM with one of these names.", field="name_pattern") from None


def _resolve_owner(*, actor: User, owner: User | str | None) -> User | None:
    """The owner given by username (API, Slack, CLI): administrators only, as vm_create_plan says."""
    if owner is None or isinstance(owner, User):
        return owner
    text = str(owner).strip()
    if not text or text == actor.get_username():
        return None
    if not actor.is_staff:
        raise PermissionDenied("Only administrators create VMs for other users.")
    found = User.objects.filter(username=text).first()
    if found is None:
        raise ValidationFailed(f"Unknown user {text[:80]!r}.", field="owner")
    return found


def _clashes(plan: CreatePlan) -> list[str]:
    return sorted(VM.objects.filter(owner=plan.owner, name__in=plan.names).exclude(status=VMStatus.DELETED)
                  .values_list("name", flat=True))


def _record(plan: CreatePlan, *, via: str, count: int, start: bool, partial: bool, key: str | None,
            fingerprint: str, pattern: str) -> BulkResult:
    """The record phase of the whole batch, in one transaction."""
    clash = _clashes(plan)  # up front, also under the lock below (a twin request may have made one)
    if clash:
        shown = ", ".join(clash[:5]) + (f" and {len(clash) - 5} more" if len(clash) > 5 else "")
        raise ValidationFailed(f"{plan.whose} VMs named {shown}: choose another pattern or start number.",
                               field="name_pattern")
    host_short = ""
    with transaction.atomic():
        if key is not None:  # first: a twin request with this key waits here, then replays
            marker = IdempotencyKey.objects.create(user=plan.actor, key=key, fingerprint=fingerprint)
        vm_create_lock(plan)
        if partial:
            fit, why = _fit(plan, count)
            if fit == 0:  # nothing fits: the quota's own refusal of one VM says why
                quota_reserve(user=plan.owner, group=plan.group, vcpus=plan.vcpus, memory_mib=plan.memory_mib,
                              disk_gib=plan.disk_gib)
                raise Conflict(f"Not one VM fits ({why}).")
        else:
            quota_reserve(user=plan.owner, group=plan.group, vcpus=plan.vcpus * count,
                          memory_mib=plan.memory_mib * count, disk_gib=plan.disk_gib * count, vms=count)
            fit, why = count, ""
        clash = _clashes(plan)
        if clash:
            raise ValidationFailed(f"{plan.whose} a VM named {clash[0]!r}.", field="name_pattern")
        parent = job_create_parent(kind=BULK_JOB, actor=plan.actor, via=via, step=f"0 of {fit} finished",
                                   params={"count": count, "name_pattern": pattern, "image": plan.image.name,
                                           "partial": partial, "start": start,
                                           "parallelism": settings.BULK_PARALLELISM})
        made = []
        for name in plan.names[:fit]:
            try:
                with transaction.atomic():  # a savepoint: a VM no host takes leaves nothing (partial)
                    made.append(vm_create_record(plan, via=via, name=name, start=start, parent=parent).vm)
            except NoHostAvailable as exc:
                if not partial:
                    raise
                host_short = exc.message
                break
        if not made:
            raise NoHostAvailable(host_short or "No host has room for these VMs.")
        if len(made) < fit:
            why = f"no host has room for more: {host_short}"
        elif fit < count and not why:
            why = "quota"
        result = {"requested": count, "created": len(made), "why_fewer": why if len(made) < count else "",
                  "vms": [vm.pk for vm in made], "names": [vm.name for vm in made]}
        Job.objects.filter(pk=parent.pk).update(result=result, target_name=f"{len(made)} × {pattern}"[:200],
                                                step=f"0 of {len(made)} finished")
        parent.result, parent.target_name = result, f"{len(made)} × {pattern}"[:200]
        if key is not None:
            IdempotencyKey.objects.filter(pk=marker.pk).update(job=parent)
        for_whom = "" if plan.owner == plan.actor else f" for {plan.owner.get_username()}"
        audit(actor=plan.actor, via=via, action=BULK_JOB, target_type="job", target_id=str(parent.pk),
              target_name=parent.target_name, job=parent, outcome=AuditEvent.Outcome.REQUESTED,
              message=f"Create {len(made)} of {count} VMs{for_whom} named {pattern}: {plan.vcpus} vCPU, "
                      f"{plan.memory_mib} MiB, {plan.disk_gib} GiB each, image {plan.image.name}"
                      + (f" ({result['why_fewer']})" if result["why_fewer"] else ""),
              data={**result, "image": plan.image.name, "owner": plan.owner.get_username(), "partial": partial})
    return BulkResult(job=parent, requested=count, created=len(made), vms=made, why_fewer=str(result["why_fewer"]))

