"""One way into an OpenStack cloud: an openstacksdk Connection built from a Cloud row, and the
translation of what the SDK raises into the portal's clear errors (never a secret, never a traceback).

Every call to a cloud goes through `cloud_call` (a context manager): a refused credential, an endpoint
that does not answer, a TLS failure, a missing service are each one sentence for the administrator.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from django.conf import settings

from portal.exceptions import Conflict, NotFound, PortalError, ValidationFailed

from . import secrets
from .models import Cloud

APP_NAME = "vmportal"


def cloud_secret(cloud: Cloud) -> str:
    """The password or application-credential secret, from the environment or decrypted."""
    if cloud.secret_env:
        return secrets.from_environment(cloud.secret_env)
    return secrets.decrypt(cloud.secret_encrypted)


def connection_kwargs(cloud: Cloud) -> dict[str, Any]:
    """The keyword arguments of openstack.connection.Connection for this cloud (secrets included:
    never log them)."""
    kwargs: dict[str, Any] = {"app_name": APP_NAME, "app_version": "1",
                              "api_timeout": settings.CLOUDS_API_TIMEOUT_SECONDS}
    if cloud.auth_type == Cloud.Auth.CLOUDS_YAML:
        kwargs["cloud"] = cloud.clouds_yaml_name
    elif cloud.auth_type == Cloud.Auth.NONE:
        kwargs["auth_type"] = "none"
        kwargs["auth"] = {"endpoint": cloud.image_endpoint or cloud.network_endpoint}
    elif cloud.auth_type == Cloud.Auth.APPLICATION_CREDENTIAL:
        kwargs["auth_type"] = "v3applicationcredential"
        kwargs["auth"] = {"auth_url": cloud.auth_url, "application_credential_id": cloud.application_credential_id,
                          "application_credential_secret": cloud_secret(cloud)}
    else:
        kwargs["auth_type"] = "password"
        kwargs["auth"] = {"auth_url": cloud.auth_url, "username": cloud.username, "password": cloud_secret(cloud),
                          "project_name": cloud.project_name,
                          "user_domain_name": cloud.user_domain_name or "Default",
                          "project_domain_name": cloud.project_domain_name or "Default"}
    if cloud.region_name:
        kwargs["region_name"] = cloud.region_name
    if cloud.image_endpoint:
        kwargs["image_endpoint_override"] = cloud.image_endpoint
    if cloud.network_endpoint:
        kwargs["network_endpoint_override"] = cloud.network_endpoint
    if cloud.auth_type != Cloud.Auth.CLOUDS_YAML:
        kwargs["verify"] = (cloud.ca_file or True) if cloud.verify_tls else False
    elif not cloud.verify_tls:  # clouds.yaml keeps its own TLS settings unless the portal's say otherwise
        kwargs["verify"] = False
    elif cloud.ca_file:
        kwargs["cacert"] = cloud.ca_file
    return kwargs


SERVICES = {"image": ("image_endpoint", "Glance"), "network": ("network_endpoint", "Neutron")}


def connect(cloud: Cloud, service: str | None = None) -> Any:
    """A new openstacksdk Connection (not shared between threads). `service` ("image" or "network") is the one
    the caller will use: without Keystone it needs its own endpoint (openstacksdk would otherwise send its calls
    to the other service's URL, the auth endpoint)."""
    # openstacksdk is imported here, not at module level: it costs ~0.6 s, and every portal process loads
    # this module (clouds.apps registers the Glance import source) while few ever talk to a cloud.
    import openstack
    import openstack.connection

    if service is not None and cloud.auth_type == Cloud.Auth.NONE:
        field, label = SERVICES[service]
        if not getattr(cloud, field):
            raise ValidationFailed(f"The cloud {cloud.name} has no {label} endpoint: without Keystone, give "
                                   f"{label}'s URL in the connection.", field=field)
    kwargs = connection_kwargs(cloud)
    with cloud_call(cloud, "connect"):
        if cloud.auth_type == Cloud.Auth.CLOUDS_YAML:
            return openstack.connect(**kwargs)
        return openstack.connection.Connection(**kwargs)


def _scrub(text: str, cloud: Cloud) -> str:
    """An SDK message, shortened, with the secret taken out should it appear."""
    text = " ".join(str(text).split())[:300]
    try:
        secret = cloud_secret(cloud)
    except PortalError:
        secret = ""
    if secret and secret in text:
        text = text.replace(secret, "********")
    return text


def _underlying(exc: BaseException, kind: type[BaseException]) -> BaseException:
    """The keystoneauth error an SDK exception was made from, if any: openstacksdk re-raises some (a refused
    sign-in in Connection.authorize) as a bare SDKException, losing the kind; the chain still holds it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return exc


@contextlib.contextmanager
def cloud_call(cloud: Cloud, what: str) -> Iterator[None]:
    """Run SDK calls, turning failures into PortalErrors: `what` names the step for the message."""
    from keystoneauth1 import exceptions as ks  # lazily, like openstacksdk in connect()
    from openstack import exceptions as sdk

    where = f"cloud {cloud.name}"
    try:
        try:
            yield
        except PortalError:
            raise
        except sdk.SDKException as exc:
            if type(exc) is not sdk.SDKException:
                raise
            raise _underlying(exc, ks.ClientException) from None
    except PortalError:
        raise
    except ks.Unauthorized:
        raise ValidationFailed(f"The {where} refused the credentials (401) while trying to {what}: check the "
                               "user name, project and password or application credential.", field="secret") from None
    except (sdk.ForbiddenException, ks.Forbidden):
        raise ValidationFailed(f"The {where} does not allow this account to {what} (403).") from None
    except (ks.ConnectFailure, ks.ConnectTimeout, ks.DiscoveryFailure) as exc:
        raise Conflict(f"The {where} could not be reached while trying to {what}: check its URL and that it is "
                       "up.", detail=_scrub(str(exc), cloud)) from None
    except ks.SSLError as exc:
        raise Conflict(f"The TLS certificate of the {where} was not accepted (set a CA bundle or turn off "
                       "verification for a test cloud).", detail=_scrub(str(exc), cloud)) from None
    except (ks.EndpointNotFound, ks.EmptyCatalog) as exc:
        raise Conflict(f"The {where} has no endpoint for this service in its catalog (give the endpoint URL).",
                       detail=_scrub(str(exc), cloud)) from None
    except ks.MissingRequiredOptions as exc:
        raise ValidationFailed(f"The {where} is missing settings: {_scrub(str(exc), cloud)}") from None
    except sdk.NotFoundException as exc:
        raise NotFound(f"The {where} has no such object ({what}).", detail=_scrub(str(exc), cloud)) from None
    except sdk.ConfigException as exc:
        raise ValidationFailed(f"The {where}'s configuration is not usable: {_scrub(str(exc), cloud)}",
                               field="clouds_yaml_name") from None
    except sdk.HttpException as exc:
        status = getattr(exc, "status_code", None) or "error"
        if status == 401:
            raise ValidationFailed(f"The {where} refused the credentials (401) while trying to {what}: check the "
                                   "user name, project and password or application credential.",
                                   field="secret") from None
        raise Conflict(f"The {where} answered {status} while trying to {what}: "
                       f"{_scrub(getattr(exc, 'details', None) or str(exc), cloud)}") from None
    except (ks.ClientException, sdk.SDKException) as exc:
        raise Conflict(f"The {where} failed while trying to {what}: {_scrub(str(exc), cloud)}") from None
