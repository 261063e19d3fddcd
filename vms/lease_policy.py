"""VM lease policy (issue #14): which rules apply to a VM, parsing of lease lengths and dates, and the
check of a lease end against the rules. Below vms.services (vm_create validates a new VM's lease here)
and vms.leases (extensions, the expiry pass).

Which rules apply: the VM's group's `LeasePolicy` (the most specific), each blank field taking the
site's setting (`PORTAL_LEASE_*`); a VM without a group (or whose group has no policy) follows the
site's settings. Administrators are not bound by policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from portal.actors import Actor, require_admin, require_user
from portal.audit import audit
from portal.exceptions import ValidationFailed

from .models import LeasePolicy

_DAYS = re.compile(r"^\s*(\d{1,5})\s*(d|day|days)?\s*$", re.IGNORECASE)
NO_LEASE_WORDS = ("none", "never", "no")
MAX_LEASE_DAYS = 36500  # the longest lease, in days or to a date (100 years)


@dataclass(frozen=True)
class LeaseRules:
    """The lease rules for one VM (or a new VM of one group), in days; 0: none/unlimited."""

    default_days: int
    max_days: int
    max_extension_days: int
    max_total_days: int
    grace_days: int
    delete_expired: bool
    source: str  # "site" or "group NAME": where the rules came from (shown in refusals and pages)


def lease_rules(group: Group | None) -> LeaseRules:
    """The group's policy, field by field over the site's settings (the most specific applies)."""
    policy = LeasePolicy.objects.filter(group=group).first() if group is not None else None

    def pick(name: str, site: object) -> object:
        value = getattr(policy, name, None) if policy is not None else None
        return site if value is None else value

    return LeaseRules(
        default_days=int(pick("default_days", settings.LEASE_DEFAULT_DAYS)),  # type: ignore[call-overload]
        max_days=int(pick("max_days", settings.LEASE_MAX_DAYS)),  # type: ignore[call-overload]
        max_extension_days=int(pick("max_extension_days", settings.LEASE_MAX_EXTENSION_DAYS)),  # type: ignore[call-overload]
        max_total_days=int(pick("max_total_days", settings.LEASE_MAX_TOTAL_DAYS)),  # type: ignore[call-overload]
        grace_days=int(pick("grace_days", settings.LEASE_GRACE_DAYS)),  # type: ignore[call-overload]
        delete_expired=bool(pick("delete_expired", settings.LEASE_DELETE_EXPIRED)),
        source=f"group {group.name}" if policy is not None and group is not None else "site",
    )


def parse_lease_days(value: object, *, field: str = "lease_days") -> int | None:
    """"7", "7d", 7 -> 7; "none"/"0" -> 0 (no lease); None/"" -> None (not given)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValidationFailed("Give the lease in days, e.g. 7 or 7d.", field=field)
    if isinstance(value, int):
        days = value
    else:
        text = str(value).strip()
        if text.lower() in NO_LEASE_WORDS:
            return 0
        match = _DAYS.match(text)
        if match is None:
            raise ValidationFailed(f"Give the lease in days, e.g. 7 or 7d (not {text[:20]!r}).", field=field)
        days = int(match.group(1))
    if days < 0 or days > MAX_LEASE_DAYS:
        raise ValidationFailed(f"A lease is between 0 (none) and {MAX_LEASE_DAYS} days.", field=field)
    return days


def parse_until(value: object, *, field: str = "until") -> datetime:
    """An ISO date or date-time (a date means the end of that day, in the site's time zone)."""
    if isinstance(value, datetime):
        when = value
    else:
        text = str(value or "").strip()
        try:  # a well-formed but impossible date (2030-02-30) is a ValueError
            when_or_none = parse_datetime(text) if "T" in text or " " in text else None
            day = parse_date(text) if text and when_or_none is None else None
        except ValueError:
            when_or_none = day = None
        if when_or_none is None:
            if day is None:
                raise ValidationFailed(f"Give a date (2030-01-31) or a date and time (2030-01-31T18:00), "
                                       f"not {text[:30]!r}.", field=field)
            when_or_none = datetime(day.year, day.month, day.day, 23, 59, 59)
        when = when_or_none
    if timezone.is_naive(when):
        when = timezone.make_aware(when)
    # As far as a lease in days goes (parse_lease_days): later ends overflow date arithmetic (an extension, the
    # grace period) and mean no lease, which is said with none.
    if when > timezone.now() + timedelta(days=MAX_LEASE_DAYS):
        raise ValidationFailed(f"A lease ends within {MAX_LEASE_DAYS} days (100 years); for no end, remove the "
                               "lease.", field=field)
    return when


def fmt_when(when: datetime) -> str:
    return timezone.localtime(when).strftime("%Y-%m-%d %H:%M")


def check_policy(*, rules: LeaseRules, target: datetime | None, now: datetime, created_at: datetime,
                  base: datetime | None, field: str) -> None:
    """Refuse a lease end a user may not choose (administrators skip this)."""
    where = "" if rules.source == "site" else f" in {rules.source}"
    if target is None:
        if rules.max_days or rules.max_total_days:
            raise ValidationFailed(f"VMs{where} must have a lease: ask for at most "
                                   f"{rules.max_days or rules.max_total_days} days.", field=field)
        return
    if target <= now:
        raise ValidationFailed("A lease must end in the future.", field=field)
    if rules.max_days and target > now + timedelta(days=rules.max_days):
        raise ValidationFailed(f"Leases{where} are at most {rules.max_days} days from now (until "
                               f"{fmt_when(now + timedelta(days=rules.max_days))} at the latest).", field=field)
    if rules.max_total_days and target > created_at + timedelta(days=rules.max_total_days):
        raise ValidationFailed(f"VMs{where} live at most {rules.max_total_days} days from their creation (until "
                               f"{fmt_when(created_at + timedelta(days=rules.max_total_days))} at the latest); "
                               "an administrator can extend beyond that.", field=field)
    if base is not None and rules.max_extension_days and target > base + timedelta(days=rules.max_extension_days):
        raise ValidationFailed(f"One extension{where} adds at most {rules.max_extension_days} days (until "
                               f"{fmt_when(base + timedelta(days=rules.max_extension_days))} at the latest).",
                               field=field)


def lease_for_new_vm(*, actor: Actor, group: Group | None, lease_days: object = None,
                     expires_at: object = None) -> datetime | None:
    """The expiry a new VM gets (vm_create's validation): asked (`lease_days`, 0 = none, or `expires_at`) or the
    policy's default (default_days, else the longest lease allowed). Refused beyond policy for non-administrators."""
    user = require_user(actor, "Sign in to manage VMs.")
    rules = lease_rules(group)
    now = timezone.now()
    days = parse_lease_days(lease_days)
    if expires_at == "":
        expires_at = None
    if expires_at is not None and days is not None:
        raise ValidationFailed("Give the lease in days or an expiry date, not both.", field="lease_days")
    target: datetime | None
    if expires_at is not None:
        target = parse_until(expires_at, field="expires_at")
        field = "expires_at"
    elif days is not None:
        target = now + timedelta(days=days) if days else None
        field = "lease_days"
    else:
        # The default, never beyond the maxima (a group's default may meet the site's maximum, or a larger one).
        limits = [d for d in (rules.max_days, rules.max_total_days) if d]
        default = min([rules.default_days or max(limits, default=0), *limits], default=0)
        return now + timedelta(days=default) if default else None
    if not user.is_staff:
        check_policy(rules=rules, target=target, now=now, created_at=now, base=None, field=field)
    return target


# --- writes (the admin's door calls these) ------------------------------------------------------------

_POLICY_FIELDS = ("default_days", "max_days", "max_extension_days", "max_total_days", "grace_days", "delete_expired")


def lease_policy_save(*, actor: Actor, via: str, policy: LeasePolicy) -> LeasePolicy:
    """Store a group's lease policy (administrators only; validated by the model's clean), audited."""
    require_admin(actor, "Only administrators set lease policies.")
    created = policy.pk is None
    with transaction.atomic():
        policy.full_clean()
        policy.save()
        data = {name: getattr(policy, name) for name in _POLICY_FIELDS}
        audit(actor=actor, via=via, action="lease_policy.create" if created else "lease_policy.change",
              target_type="lease_policy", target_id=str(policy.pk), target_name=str(policy),
              message=f"{policy}: " + ", ".join(f"{k} {'site' if v is None else v}" for k, v in data.items()),
              data=data)
    return policy


def lease_policy_delete(*, actor: Actor, via: str, policy: LeasePolicy) -> None:
    """Remove a group's lease policy: the site's lease rules apply to its VMs again. Audited."""
    require_admin(actor, "Only administrators remove lease policies.")
    with transaction.atomic():
        audit(actor=actor, via=via, action="lease_policy.delete", target_type="lease_policy",
              target_id=str(policy.pk), target_name=str(policy), message=f"Delete {policy}: the site's lease rules apply")
        policy.delete()
