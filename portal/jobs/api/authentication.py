"""The plugin door's credential: `Authorization: Plugin <token>` (portal.plugins).

Only the external-job endpoints use this class; no other view lists it, so a plugin token is no
credential anywhere else (401 there), and a user's token or session is none here.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from portal.models import PluginToken
from portal.plugins import plugin_authenticate

KEYWORD = "Plugin"


class PluginTokenAuthentication(BaseAuthentication):
    """Authenticates as a plugin: `request.user` stays anonymous, `request.auth` is the PluginToken."""

    def authenticate(self, request: Request) -> tuple[AnonymousUser, PluginToken] | None:
        auth = get_authorization_header(request).split()
        if not auth or auth[0].lower() != KEYWORD.lower().encode():
            return None
        if len(auth) != 2:
            raise AuthenticationFailed("Invalid plugin token header: 'Plugin <token>'.")
        try:
            token = auth[1].decode("ascii")
        except UnicodeError:
            raise AuthenticationFailed("Invalid plugin token.") from None
        plugin = plugin_authenticate(token=token)
        if plugin is None:
            raise AuthenticationFailed("Invalid or revoked plugin token.")
        return AnonymousUser(), plugin

    def authenticate_header(self, request: Request) -> str:
        return KEYWORD


class PluginTokenElsewhere(BaseAuthentication):
    """Listed last among the user endpoints' credentials: a plugin token there is refused in words (401) that
    say where it belongs, rather than DRF's "Authentication credentials were not provided"."""

    def authenticate(self, request: Request) -> None:
        auth = get_authorization_header(request).split()
        if auth and auth[0].lower() == KEYWORD.lower().encode():
            raise AuthenticationFailed("A plugin token opens only the external-job API (/api/jobs/external/); "
                                       "this endpoint takes a user's API token: 'Authorization: Token <key>'.")
        return None


class IsPlugin(BasePermission):
    """The request carries an active plugin token."""

    message = "A plugin token is required: 'Authorization: Plugin <token>'."

    def has_permission(self, request: Request, view: object) -> bool:
        if isinstance(request.auth, PluginToken):
            return True
        # DRF answers an unauthenticated request with its generic "credentials were not provided", even when
        # a user's token or session was sent: say what this door takes instead (still 401).
        auth = get_authorization_header(request).split()
        if auth or request._request.user.is_authenticated:
            raise NotAuthenticated("A user's API token or session does not open the plugin API; send "
                                   "'Authorization: Plugin <token>' (manage.py plugin-token create).")
        raise NotAuthenticated(self.message)


class PluginTokenScheme(OpenApiAuthenticationExtension):
    """The plugin token in the OpenAPI schema (drf-spectacular finds it by subclassing)."""

    target_class = PluginTokenAuthentication
    name = "pluginToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`Plugin <token>` (manage.py plugin-token create)."}


class PluginTokenElsewhereScheme(OpenApiAuthenticationExtension):
    """No credential of its own (it only refuses one): nothing in the schema, and no warning."""

    target_class = PluginTokenElsewhere
    name: list[str] = []

    def get_security_requirement(self, auto_schema: Any) -> list[dict[str, list[Any]]]:
        return []

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, str]]:
        return []
