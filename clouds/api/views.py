"""Clouds API (administrators only): list, add, show, change and remove cloud connections, and check one.
Every write is one clouds.services call (errors are JSON 4xx through portal.api). The secret is accepted,
stored encrypted and never returned."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from clouds import services
from clouds.models import Cloud
from clouds.selectors import cloud_get, cloud_list
from portal.actors import is_admin
from portal.api import INVALID, NOT_FOUND, ErrorSerializer, Pagination
from portal.choices import Via
from portal.exceptions import ValidationFailed

from .serializers import CheckResultSerializer, CloudSerializer, CloudWriteSerializer

FORBIDDEN = OpenApiResponse(ErrorSerializer, description="Administrators only.")
CONFLICT = OpenApiResponse(ErrorSerializer, description="An import or publication with the cloud is running.")
CLOUD = OpenApiParameter("id", str, OpenApiParameter.PATH, description="The cloud's numeric id or its name.")


class AdminsOnly(permissions.BasePermission):
    message = "Only administrators manage cloud connections."

    def has_permission(self, request: Request, view: Any) -> bool:
        return is_admin(request.user)


class CloudViewSet(viewsets.GenericViewSet):
    """OpenStack cloud connections (Glance and Neutron), for administrators."""

    serializer_class = CloudSerializer
    permission_classes = [permissions.IsAuthenticated, AdminsOnly]
    pagination_class = Pagination
    filter_backends: list = []
    lookup_value_regex = "[^/]+"
    queryset = Cloud.objects.none()  # for schema introspection; reads go through clouds.selectors

    def get_serializer_class(self) -> type[BaseSerializer]:
        return CloudWriteSerializer if self.action in ("create", "partial_update") else CloudSerializer

    @extend_schema(responses={200: CloudSerializer(many=True), 403: FORBIDDEN})
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(cloud_list(actor=request.user))
        return self.get_paginated_response(CloudSerializer(page, many=True).data)

    @extend_schema(parameters=[CLOUD], responses={200: CloudSerializer, 403: FORBIDDEN, 404: NOT_FOUND})
    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        return Response(CloudSerializer(cloud_get(actor=request.user, key=pk or "")).data)

    @extend_schema(request=CloudWriteSerializer, responses={201: CloudSerializer, 400: INVALID, 403: FORBIDDEN})
    def create(self, request: Request) -> Response:
        """Connect a cloud; the secret is stored encrypted and never returned (check it with .../check/)."""
        data = CloudWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        fields.pop("clear_secret", None)
        if "name" not in fields:
            raise ValidationFailed("Give the cloud a name.", field="name")
        cloud = services.cloud_create(actor=request.user, via=Via.API, **fields)
        return Response(CloudSerializer(cloud).data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[CLOUD], request=CloudWriteSerializer,
                   responses={200: CloudSerializer, 400: INVALID, 403: FORBIDDEN, 404: NOT_FOUND})
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        """Change a connection; fields left out stay; `secret` replaces the stored one, `clear_secret` removes it."""
        cloud = cloud_get(actor=request.user, key=pk or "")
        data = CloudWriteSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        if fields.pop("name", cloud.name) != cloud.name:
            raise ValidationFailed("A cloud cannot be renamed; add it again under the new name.", field="name")
        secret = fields.pop("secret", None) or None
        clear = bool(fields.pop("clear_secret", False))
        cloud = services.cloud_update(actor=request.user, via=Via.API, cloud=cloud, secret=secret,
                                      clear_secret=clear, **fields)
        return Response(CloudSerializer(cloud).data)

    @extend_schema(parameters=[CLOUD], request=None,
                   responses={204: None, 403: FORBIDDEN, 404: NOT_FOUND, 409: CONFLICT})
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        """Remove a connection (images and networks that came from it stay); refused while its job runs."""
        services.cloud_delete(actor=request.user, via=Via.API, cloud=cloud_get(actor=request.user, key=pk or ""))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(parameters=[CLOUD], request=None,
                   responses={200: CheckResultSerializer, 403: FORBIDDEN, 404: NOT_FOUND})
    @action(detail=True, methods=["post"], url_path="check", url_name="check")
    def check(self, request: Request, pk: str | None = None) -> Response:
        """Sign in and make one call to Glance and Neutron; the answer says what works (200 either way)."""
        cloud = cloud_get(actor=request.user, key=pk or "")
        result = services.cloud_check(actor=request.user, via=Via.API, cloud=cloud)
        cloud.refresh_from_db()
        return Response({"ok": result.ok, "message": result.message, "services": result.services,
                         "cloud": CloudSerializer(cloud).data})
