"""Clusters' scheduling settings: the one place that checks a policy name and its properties.

Every door (the admin, `manage.py cluster`) calls `cluster_create` / `cluster_update`; a bad policy or threshold is a ValidationFailed
keyed by field, which the admin shows on the form.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from portal.actors import require_admin
from portal.audit import audit
from portal.exceptions import ValidationFailed

from .models import Cluster
from .scheduler import policy_names
from .scheduler.base import DEFAULT_PROPERTIES

PERCENT_PROPERTIES = ("high_utilization", "low_utilization")
COUNT_PROPERTIES = ("max_concurrent_migrations", "migration_guard_minutes", "vm_count_spread")


def validate_policy(policy: str) -> str:
    name = (policy or "").strip()
    known = policy_names()
    if name not in known:
        raise ValidationFailed(f"Unknown scheduling policy {name[:64]!r} (known: {', '.join(known)}).", field="policy")
    return name


def validate_policy_properties(properties: Any) -> dict[str, Any]:
    """Numbers only; thresholds are percents with low below high; counts are whole numbers. Unknown keys
    are kept (a plugin may read them) but must be numbers too."""
    if properties in (None, ""):
        return {}
    if not isinstance(properties, dict):
        raise ValidationFailed("Policy properties must be a JSON object, e.g. {\"high_utilization\": 80}.",
                               field="policy_properties")
    errors: list[str] = []
    clean: dict[str, Any] = {}
    for key, value in properties.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"{key} must be a number.")
            continue
        if value < 0:
            errors.append(f"{key} cannot be negative.")
        elif key in PERCENT_PROPERTIES and value > 100:
            errors.append(f"{key} is a percent: 0 to 100.")
        elif key in COUNT_PROPERTIES and value != int(value):
            errors.append(f"{key} must be a whole number.")
        elif key == "memory_overcommit_percent" and not 50 <= value <= 400:
            errors.append("memory_overcommit_percent must be between 50 and 400.")
        elif key == "vcpu_overcommit_ratio" and value <= 0:
            errors.append("vcpu_overcommit_ratio must be above 0.")
        clean[key] = int(value) if key in COUNT_PROPERTIES and value == int(value) else value
    low = clean.get("low_utilization", DEFAULT_PROPERTIES["low_utilization"])
    high = clean.get("high_utilization", DEFAULT_PROPERTIES["high_utilization"])
    if not errors and low >= high:
        errors.append(f"low_utilization ({low}) must be below high_utilization ({high}).")
    if errors:
        raise ValidationFailed({"policy_properties": errors})
    return clean


def cluster_update(*, actor: Any, via: str, cluster: Cluster, name: str | None = None,
                   description: str | None = None, policy: str | None = None,
                   policy_properties: dict[str, Any] | None = None, balancing_enabled: bool | None = None,
                   power_saving_enabled: bool | None = None, ha_enabled: bool | None = None) -> Cluster:
    """Change a cluster's name, policy, properties or switches (None: unchanged), validated and audited."""
    require_admin(actor, "Only administrators change clusters.")
    changes: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    if name is not None:
        text = name.strip()
        if not text or len(text) > 100:
            errors["name"] = ["A cluster needs a name of 1 to 100 characters."]
        elif Cluster.objects.filter(name=text).exclude(pk=cluster.pk).exists():
            errors["name"] = [f"A cluster named {text!r} already exists."]
        changes["name"] = text
    if description is not None:
        changes["description"] = description.strip()
    try:
        if policy is not None:
            changes["policy"] = validate_policy(policy)
    except ValidationFailed as exc:
        errors.update(exc.errors)
    try:
        if policy_properties is not None:
            changes["policy_properties"] = validate_policy_properties(policy_properties)
    except ValidationFailed as exc:
        errors.update(exc.errors)
    for fieldname, flag in (("balancing_enabled", balancing_enabled), ("power_saving_enabled", power_saving_enabled),
                            ("ha_enabled", ha_enabled)):
        if flag is not None:
            changes[fieldname] = bool(flag)
    if errors:
        raise ValidationFailed(errors)
    with transaction.atomic():
        locked = Cluster.objects.select_for_update().get(pk=cluster.pk)
        before = {k: getattr(locked, k) for k in changes}
        for key, value in changes.items():
            setattr(locked, key, value)
        locked.save()
        changed = {k: v for k, v in changes.items() if before[k] != v}
        audit(actor=actor, via=via, action="cluster.update", target=locked,
              message=f"Update cluster {locked.name}: " + (", ".join(sorted(changed)) or "no change"),
              data={k: {"from": before[k], "to": v} for k, v in changed.items()})
    for key, value in changes.items():
        setattr(cluster, key, value)
    return locked


def cluster_create(*, actor: Any, via: str, name: str, **settings: Any) -> Cluster:
    """A new cluster with the given settings (those of `cluster_update`), validated and audited `cluster.create`;
    nothing is made when a setting is refused."""
    require_admin(actor, "Only administrators create clusters.")
    text = (name or "").strip()
    if not text or len(text) > 100:
        raise ValidationFailed("A cluster needs a name of 1 to 100 characters.", field="name")
    if Cluster.objects.filter(name=text).exists():
        raise ValidationFailed(f"A cluster named {text!r} already exists.", field="name")
    settings.pop("name", None)
    with transaction.atomic():
        cluster = Cluster.objects.create(name=text)
        audit(actor=actor, via=via, action="cluster.create", target=cluster, message=f"Create cluster {text}")
        return cluster_update(actor=actor, via=via, cluster=cluster, **settings)
