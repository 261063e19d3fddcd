"""Storage domains API (/api/storage-domains/): everyone signed in lists the data domains (names, size and
free space, nothing about hosts or paths); administrators see every domain with its hosts and paths, add one
to hosts, refresh its capacity and remove it. Every rule is in storage.domains."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from cluster.selectors import host_get
from portal.actors import is_admin
from portal.api import INVALID, NOT_FOUND, ErrorSerializer, Pagination
from portal.choices import Via
from portal.exceptions import NotFound
from storage.domains import (
    StorageDomain,
    domain_add,
    domain_get,
    domain_refresh,
    domain_remove,
    domain_visible_to,
)
from storage.models import StoragePool

NAME = OpenApiParameter("id", str, OpenApiParameter.PATH, description="The storage domain's name.")
FORBIDDEN = OpenApiResponse(ErrorSerializer, description="Administrators only.")


class StorageDomainSerializer(serializers.Serializer):
    """What every signed-in user sees of a data domain: where VM disks can go and how much room is left."""

    name = serializers.CharField()
    capacity_bytes = serializers.IntegerField()
    available_bytes = serializers.IntegerField()


class StorageDomainPoolSerializer(serializers.Serializer):
    host = serializers.CharField(source="host.name")
    path = serializers.CharField()
    active = serializers.BooleanField()
    capacity_bytes = serializers.IntegerField()
    allocation_bytes = serializers.IntegerField()
    available_bytes = serializers.IntegerField()
    refreshed_at = serializers.DateTimeField(allow_null=True)
    last_error = serializers.CharField()


class StorageDomainStaffSerializer(StorageDomainSerializer):
    """Administrators: the domain's kind, content, use and each host's pool."""

    kind = serializers.CharField()
    content = serializers.CharField()
    shared = serializers.BooleanField()
    allocation_bytes = serializers.IntegerField()
    used_percent = serializers.IntegerField()
    active = serializers.BooleanField()
    source_host = serializers.SerializerMethodField()
    source_name = serializers.SerializerMethodField()
    pools = StorageDomainPoolSerializer(many=True)

    def get_source_host(self, obj: StorageDomain) -> str:
        return obj.pools[0].source_host if obj.pools else ""

    def get_source_name(self, obj: StorageDomain) -> str:
        return obj.pools[0].source_name if obj.pools else ""


class StorageDomainCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    kind = serializers.ChoiceField(choices=StoragePool.Kind.choices, default=StoragePool.Kind.DIR)
    content = serializers.ChoiceField(choices=StoragePool.Content.choices, default=StoragePool.Content.DATA)
    hosts = serializers.ListField(child=serializers.CharField(max_length=100), min_length=1, max_length=500,
                                  help_text="Names of the hosts that get the domain.")
    path = serializers.CharField(max_length=500, required=False, allow_blank=True, default="",
                                 help_text="Directory on the hosts inside PORTAL_STORAGE_ALLOWED_ROOTS (glusterfs: "
                                           "the mount point; default PORTAL_STORAGE_MOUNT_DIR/NAME).")
    source_host = serializers.CharField(max_length=255, required=False, allow_blank=True, default="",
                                        help_text="glusterfs: the server.")
    source_name = serializers.CharField(max_length=255, required=False, allow_blank=True, default="",
                                        help_text="glusterfs: the volume.")


class StaffWritesOnly(permissions.BasePermission):
    message = "Only administrators change storage domains."

    def has_permission(self, request: Request, view: Any) -> bool:
        return request.method in permissions.SAFE_METHODS or is_admin(request.user)


class StorageDomainViewSet(viewsets.ViewSet):
    """Storage domains: where VM disks (data) and backups (backup) are kept, across hosts."""

    permission_classes = [permissions.IsAuthenticated, StaffWritesOnly]
    lookup_value_regex = "[^/]+"

    def _serializer(self, request: Request) -> type[serializers.Serializer]:
        return StorageDomainStaffSerializer if is_admin(request.user) else StorageDomainSerializer

    @extend_schema(responses={200: StorageDomainStaffSerializer(many=True)})
    def list(self, request: Request) -> Response:
        """Storage domains: data domains' names and free space for everyone; all with hosts for administrators."""
        paginator = Pagination()
        page = paginator.paginate_queryset(domain_visible_to(request.user), request, view=self)
        return paginator.get_paginated_response(self._serializer(request)(page, many=True).data)

    def _find(self, request: Request, name: str) -> StorageDomain:
        domain = domain_get(name)
        if not is_admin(request.user) and domain.content != StoragePool.Content.DATA:
            raise NotFound(f"There is no storage domain {name[:100]!r}.")
        return domain

    @extend_schema(parameters=[NAME], responses={200: StorageDomainStaffSerializer, 404: NOT_FOUND})
    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        return Response(self._serializer(request)(self._find(request, str(pk))).data)

    @extend_schema(request=StorageDomainCreateSerializer,
                   responses={201: StorageDomainStaffSerializer, 400: INVALID, 403: FORBIDDEN, 404: NOT_FOUND,
                              409: OpenApiResponse(ErrorSerializer, description="A host does not answer.")})
    def create(self, request: Request) -> Response:
        """Add a storage domain to hosts (made and started in libvirt on each; all or nothing)."""
        data = StorageDomainCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        hosts = [host_get(name_or_id=name) for name in v["hosts"]]
        pools = domain_add(actor=request.user, via=Via.API, name=v["name"], kind=v["kind"], hosts=hosts,
                           path=v["path"], content=v["content"], source_host=v["source_host"],
                           source_name=v["source_name"])
        return Response(StorageDomainStaffSerializer(domain_get(pools[0].name)).data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[NAME, OpenApiParameter("host", str, description="Only from this host.")],
                   request=None,
                   responses={204: OpenApiResponse(description="Removed (its files stay)."), 403: FORBIDDEN,
                              404: NOT_FOUND, 409: OpenApiResponse(ErrorSerializer, description="In use.")})
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        """Remove a storage domain from every host (or `?host=NAME`); refused while anything uses it."""
        host_name = request.query_params.get("host")
        host = host_get(name_or_id=host_name) if host_name else None
        domain_remove(actor=request.user, via=Via.API, name=str(pk), host=host)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(parameters=[NAME], request=None,
                   responses={200: StorageDomainStaffSerializer, 403: FORBIDDEN, 404: NOT_FOUND})
    @action(detail=True, methods=["post"])
    def refresh(self, request: Request, pk: str | None = None) -> Response:
        """Read the domain's capacity and use from libvirt now."""
        domain = domain_refresh(actor=request.user, via=Via.API, name=str(pk))[0]
        return Response(StorageDomainStaffSerializer(domain).data)
