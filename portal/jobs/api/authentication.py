"""The plugin door's credential: `Authorization: Plugin <token>` (portal.plugins).

Only the external-job endpoints use this class; no other view lists it, so a plugin token is no
credential anywhere else (401 there), and a user's token or session is none here.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
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


class IsPlugin(BasePermission):
    """The request carries an active plugin token."""

    message = "A plugin token is required: 'Authorization: Plugin <token>'."

    def has_permission(self, request: Request, view: object) -> bool:
        return isinstance(request.auth, PluginToken)


class PluginTokenScheme(OpenApiAuthenticationExtension):
    """The plugin token in the OpenAPI schema (drf-spectacular finds it by subclassing)."""

    target_class = PluginTokenAuthentication
    name = "pluginToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`Plugin <token>` (manage.py plugin-token create)."}
