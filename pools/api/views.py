"""VM pools API: list the pools you may take from, take a VM, return it; administrators create, change and
delete pools. Every write is one pools.services call (errors are JSON 4xx through portal.api)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from pools.models import VMPool
from pools.selectors import pool_get, pool_list
from pools.services import TakeResult, pool_create, pool_delete, pool_return, pool_take, pool_update
from portal.actors import is_admin
from portal.api import INVALID, NAME_OR_ID, NOT_FOUND, ErrorSerializer, Pagination
from portal.choices import Via
from portal.exceptions import ValidationFailed
from vms.validation import parse_id

from .serializers import PoolSerializer, PoolWriteSerializer, ReturnSerializer, TakeSerializer

FORBIDDEN = OpenApiResponse(ErrorSerializer, description="Administrators only.")
CONFLICT = OpenApiResponse(ErrorSerializer, description="No free VM, or VMs still taken.")


class StaffWritesOnly(permissions.BasePermission):
    """Anyone signed in reads and takes; only administrators define pools."""

    message = "Only administrators manage VM pools."

    def has_permission(self, request: Request, view: Any) -> bool:
        return (request.method in permissions.SAFE_METHODS or view.action in ("take", "give_back")
                or is_admin(request.user))


class PoolViewSet(viewsets.GenericViewSet):
    """VM pools: ready, running VMs to take and return."""

    serializer_class = PoolSerializer
    permission_classes = [permissions.IsAuthenticated, StaffWritesOnly]
    pagination_class = Pagination
    filter_backends: list = []
    lookup_value_regex = "[^/]+"
    queryset = VMPool.objects.none()  # for schema introspection; reads go through pools.selectors

    def get_serializer_class(self) -> type[BaseSerializer]:
        return PoolWriteSerializer if self.action in ("create", "partial_update") else PoolSerializer

    def _fresh(self, request: Request, pool: VMPool) -> dict:
        return PoolSerializer(pool_get(user=request.user, key=pool.pk)).data

    @extend_schema(responses={200: PoolSerializer(many=True)},
                   description="Pools you may take a VM from (administrators: all), with free and taken counts.")
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(pool_list(user=request.user))
        return self.get_paginated_response(PoolSerializer(page, many=True).data)

    @extend_schema(parameters=[NAME_OR_ID], responses={200: PoolSerializer, 404: NOT_FOUND})
    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        return Response(PoolSerializer(pool_get(user=request.user, key=pk)).data)

    @extend_schema(request=PoolWriteSerializer, responses={201: PoolSerializer, 400: INVALID, 403: FORBIDDEN})
    def create(self, request: Request) -> Response:
        """Define a pool (administrators); its VMs are made by the next replenish pass."""
        data = PoolWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        if "name" not in fields or "image" not in fields:
            raise ValidationFailed("A pool needs a name and an image.", field="name" if "name" not in fields else "image")
        pool = pool_create(actor=request.user, via=Via.API, **fields)
        return Response(self._fresh(request, pool), status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[NAME_OR_ID], request=PoolWriteSerializer,
                   responses={200: PoolSerializer, 400: INVALID, 403: FORBIDDEN, 404: NOT_FOUND})
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        """Change a pool (administrators); the name stays."""
        pool = pool_get(user=request.user, key=pk)
        data = PoolWriteSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        if fields.pop("name", pool.name) != pool.name:
            raise ValidationFailed("A pool cannot be renamed (its VMs are named after it).", field="name")
        pool = pool_update(actor=request.user, via=Via.API, pool=pool, **fields)
        return Response(self._fresh(request, pool))

    @extend_schema(parameters=[NAME_OR_ID], request=None,
                   responses={204: None, 403: FORBIDDEN, 404: NOT_FOUND, 409: CONFLICT})
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        """Delete a pool and its free VMs (administrators); refused while a VM is taken."""
        pool_delete(actor=request.user, via=Via.API, pool=pool_get(user=request.user, key=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _taken(self, request: Request, result: TakeResult) -> dict:
        return {"vm_id": result.vm.pk, "vm": result.vm.name, "message": result.message,
                "url": request.build_absolute_uri(f"/api/vms/{result.vm.pk}/")}

    @extend_schema(parameters=[NAME_OR_ID], request=None,
                   responses={200: TakeSerializer, 404: NOT_FOUND, 409: CONFLICT})
    @action(detail=True, methods=["post"], url_path="take", url_name="take")
    def take(self, request: Request, pk: str | None = None) -> Response:
        """Take a free running VM of the pool (or get the one you hold); it is yours to use until you return it."""
        return Response(self._taken(request, pool_take(actor=request.user, via=Via.API, pool=pk or "")))

    @extend_schema(parameters=[NAME_OR_ID], request=ReturnSerializer,
                   responses={200: TakeSerializer, 400: INVALID, 404: NOT_FOUND, 409: CONFLICT})
    @action(detail=True, methods=["post"], url_path="return", url_name="return")
    def give_back(self, request: Request, pk: str | None = None) -> Response:
        """Return a VM you hold (a stateless pool resets it to its image)."""
        data = ReturnSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        vm_id = parse_id(data.validated_data["vm"])
        if vm_id is None:
            raise ValidationFailed("Give the held VM's numeric id.", field="vm")
        pool = pool_get(user=request.user, key=pk)  # a pool you cannot see is not found
        return Response(self._taken(request, pool_return(actor=request.user, via=Via.API, vm=vm_id, pool=pool)))
