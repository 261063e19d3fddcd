"""Cloud connections: add, change, remove and check them (administrators only, validated, audited).

Secrets: `secret` is written encrypted (clouds.secrets) and never returned; `secret_env` names an
environment variable that holds it instead. Changing anything else leaves the secret as it is; an
empty `secret` with `clear_secret=True` removes it.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from portal.actors import Actor, require_admin
from portal.audit import audit
from portal.choices import JobStatus
from portal.exceptions import Conflict, PortalError, ValidationFailed, admin_message
from portal.models import AuditEvent, Job

from . import secrets
from .connection import cloud_call, connect
from .models import Cloud

NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,39}")
ENV_RE = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
TEXT_FIELDS = ("description", "clouds_yaml_name", "auth_url", "username", "user_domain_name", "project_name",
               "project_domain_name", "application_credential_id", "region_name", "image_endpoint",
               "network_endpoint", "ca_file", "secret_env")
FIELDS = frozenset({*TEXT_FIELDS, "auth_type", "verify_tls"})
LABELS = {"glance": "Glance", "neutron": "Neutron"}
CLOUD_JOB_KINDS = ("glance.publish", "image.import")  # a Glance import is an image.import job (source "glance")


def _check_url(value: str, field: str) -> str:
    if not value:
        return ""
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValidationFailed(f"{value[:100]!r} is not an http(s) URL.", field=field)
    if parsed.username or parsed.password:
        raise ValidationFailed("Put credentials in their own fields, not in the URL.", field=field)
    return value.rstrip("/")


def _clean(fields: dict[str, Any]) -> dict[str, Any]:
    """Check a cloud's fields as a whole (after a change is merged in)."""
    out: dict[str, Any] = {}
    for key in TEXT_FIELDS:
        value = fields.get(key)
        out[key] = "" if value is None else str(value).strip()
        limit = getattr(Cloud._meta.get_field(key), "max_length", None) or 300
        if len(out[key]) > limit:
            raise ValidationFailed(f"Too long (at most {limit} characters).", field=key)
    out["verify_tls"] = bool(fields.get("verify_tls", True))
    auth = str(fields.get("auth_type") or Cloud.Auth.PASSWORD)
    if auth not in Cloud.Auth.values:
        raise ValidationFailed(f"Authentication must be one of: {', '.join(Cloud.Auth.values)}.", field="auth_type")
    out["auth_type"] = auth
    for key in ("auth_url", "image_endpoint", "network_endpoint"):
        out[key] = _check_url(out[key], key)
    if out["secret_env"] and not ENV_RE.fullmatch(out["secret_env"]):
        raise ValidationFailed("An environment variable name is upper-case letters, digits and underscores.",
                               field="secret_env")
    if auth == Cloud.Auth.CLOUDS_YAML and not out["clouds_yaml_name"]:
        raise ValidationFailed("Name the cloud's entry in clouds.yaml.", field="clouds_yaml_name")
    if auth == Cloud.Auth.NONE and not (out["image_endpoint"] or out["network_endpoint"]):
        raise ValidationFailed("Without Keystone, give Glance's and/or Neutron's endpoint URL.",
                               field="image_endpoint")
    if auth in (Cloud.Auth.PASSWORD, Cloud.Auth.APPLICATION_CREDENTIAL) and not out["auth_url"]:
        raise ValidationFailed("Give Keystone's URL (e.g. https://keystone.example.org:5000/v3).", field="auth_url")
    if auth == Cloud.Auth.PASSWORD:
        for key, label in (("username", "user name"), ("project_name", "project")):
            if not out[key]:
                raise ValidationFailed(f"Give the {label}.", field=key)
    if auth == Cloud.Auth.APPLICATION_CREDENTIAL and not out["application_credential_id"]:
        raise ValidationFailed("Give the application credential's ID.", field="application_credential_id")
    if out["ca_file"] and not out["ca_file"].startswith("/"):
        raise ValidationFailed("The CA bundle is an absolute path on the portal server.", field="ca_file")
    return out


def _needs_secret(cloud: Cloud) -> bool:
    return cloud.auth_type in (Cloud.Auth.PASSWORD, Cloud.Auth.APPLICATION_CREDENTIAL)


def cloud_create(*, actor: Actor, via: str, name: str, secret: str = "", **fields: Any) -> Cloud:
    require_admin(actor, "Only administrators connect clouds.")
    unknown = set(fields) - FIELDS
    if unknown:
        raise ValidationFailed(f"Unknown field {sorted(unknown)[0]!r}.")
    name = str(name or "").strip()
    if not NAME_RE.fullmatch(name):
        raise ValidationFailed("A cloud's name is 1–40 lowercase letters, digits or hyphens, starting with a letter.",
                               field="name")
    clean = _clean(fields)
    cloud = Cloud(name=name, **clean)
    if secret and clean["secret_env"]:
        raise ValidationFailed("Give the secret or the environment variable that holds it, not both.", field="secret")
    if _needs_secret(cloud) and not (secret or clean["secret_env"]):
        raise ValidationFailed("Give the password or application-credential secret (or the environment variable "
                               "that holds it).", field="secret")
    cloud.secret_encrypted = secrets.encrypt(secret)
    try:
        with transaction.atomic():
            cloud.save()
    except IntegrityError:
        raise ValidationFailed(f"A cloud named {name!r} exists already.", field="name") from None
    audit(actor=actor, via=via, action="cloud.create", target=cloud,
          message=f"Connected cloud {name} ({cloud.get_auth_type_display()})")
    return cloud


def cloud_update(*, actor: Actor, via: str, cloud: Cloud, secret: str | None = None, clear_secret: bool = False,
                 **changes: Any) -> Cloud:
    require_admin(actor, "Only administrators change clouds.")
    unknown = set(changes) - FIELDS
    if unknown:
        raise ValidationFailed(f"Unknown field {sorted(unknown)[0]!r}.")
    with transaction.atomic():
        locked = Cloud.objects.select_for_update().get(pk=cloud.pk)
        merged = {key: getattr(locked, key) for key in FIELDS} | changes
        clean = _clean(merged)
        said = sorted(k for k, v in clean.items() if getattr(locked, k) != v)
        for key, value in clean.items():
            setattr(locked, key, value)
        if secret:
            if clean["secret_env"]:
                raise ValidationFailed("Give the secret or the environment variable that holds it, not both.",
                                       field="secret")
            locked.secret_encrypted = secrets.encrypt(secret)
            said.append("secret")
        elif clear_secret or (clean["secret_env"] and locked.secret_encrypted):
            locked.secret_encrypted = ""
            said.append("secret")
        if _needs_secret(locked) and not locked.has_secret:
            raise ValidationFailed("This authentication needs a password or secret.", field="secret")
        locked.save()
    if said:
        audit(actor=actor, via=via, action="cloud.update", target=locked,
              message=f"Changed cloud {locked.name}: {', '.join(said)}")
    return locked


def cloud_busy_reason(cloud: Cloud) -> str | None:
    """Why the cloud cannot be removed now (a job of it is pending or running), or None."""
    busy = Job.objects.filter(Q(params__cloud_id=cloud.pk) | Q(params__source_params__cloud_id=cloud.pk),
                              kind__in=CLOUD_JOB_KINDS,
                              status__in=(JobStatus.PENDING, JobStatus.RUNNING)).exists()
    if busy:
        return f"An import or publication with cloud {cloud.name} is still running; wait for it or cancel it."
    return None


def cloud_delete(*, actor: Actor, via: str, cloud: Cloud) -> None:
    """Forget a cloud: the portal's images and networks that came from it stay (their links go)."""
    require_admin(actor, "Only administrators remove clouds.")
    reason = cloud_busy_reason(cloud)
    if reason:
        raise Conflict(reason)
    name = cloud.name
    cloud.delete()
    audit(actor=actor, via=via, action="cloud.delete", target_type="cloud", target_name=name,
          message=f"Removed cloud {name} (images and networks that came from it stay)")


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    services: dict[str, str]  # service -> "ok" or the error sentence
    message: str


def cloud_check(*, actor: Actor, via: str, cloud: Cloud) -> CheckResult:
    """Connect and make one cheap call to each service the cloud offers (Glance, Neutron); record and
    return how it went. Never raises for the cloud's own failures: they are the result."""
    require_admin(actor, "Only administrators check clouds.")
    services: dict[str, str] = {}
    try:
        conn = connect(cloud)
        if cloud.auth_type not in (Cloud.Auth.NONE,):
            with cloud_call(cloud, "sign in"):
                conn.authorize()
        wanted = _services(cloud, conn)
        for service in wanted:
            try:
                with cloud_call(cloud, "list Glance images" if service == "glance" else "list Neutron networks"):
                    if service == "glance":
                        next(iter(conn.image.images(limit=1)), None)
                    else:
                        next(iter(conn.network.networks(limit=1)), None)
                services[service] = "ok"
            except PortalError as exc:
                services[service] = admin_message(exc)
        if not wanted:
            raise ValidationFailed("The cloud offers neither Glance nor Neutron.")
        ok = all(v == "ok" for v in services.values())
        if ok:
            message = "Connected: " + "; ".join(f"{LABELS[k]} ok" for k in services)
        else:
            message = " ".join(f"{LABELS[k]}: {v}" if v != "ok" else f"{LABELS[k]}: ok." for k, v in services.items())
    except PortalError as exc:
        ok, message = False, admin_message(exc)
    Cloud.objects.filter(pk=cloud.pk).update(last_check_at=timezone.now(), last_check_ok=ok,
                                             last_check_message=message[:1000])
    cloud.last_check_ok, cloud.last_check_message = ok, message[:1000]
    audit(actor=actor, via=via, action="cloud.check", target=cloud,
          outcome=AuditEvent.Outcome.SUCCEEDED if ok else AuditEvent.Outcome.FAILED, message=f"Checked cloud {cloud.name}: {message[:300]}")
    return CheckResult(ok=ok, services=services, message=message)


def _services(cloud: Cloud, conn: Any) -> list[str]:
    """Which of Glance and Neutron the cloud offers: its endpoints, or its catalog."""
    if cloud.auth_type == Cloud.Auth.NONE:
        return [s for s, url in (("glance", cloud.image_endpoint), ("neutron", cloud.network_endpoint)) if url]
    found = []
    for service, kind in (("glance", "image"), ("neutron", "network")):
        if (cloud.image_endpoint if service == "glance" else cloud.network_endpoint):
            found.append(service)
            continue
        with cloud_call(cloud, "read the service catalog"):
            if conn.has_service(kind):
                found.append(service)
    return found
