"""Hosts and clusters API (staff only): read-only lists, and the host operations (maintenance, activate, fence,
declare down)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response

from cluster import maintenance, power
from cluster.ha_outlook import ha_outlook
from cluster.models import Cluster, Host
from cluster.selectors import cluster_get, cluster_list, host_get, host_list
from portal.api import CatalogViewSet
from portal.choices import Via

from .serializers import ClusterSerializer, HostMaintenanceSerializer, HostOperationSerializer, HostSerializer


class HostViewSet(CatalogViewSet):
    """Hypervisor hosts (staff only): settings, capacity, load and state; maintenance, activate, fence, declare down."""

    serializer_class = HostSerializer
    permission_classes = [IsAdminUser]
    queryset = Host.objects.none()

    def visible(self, request: Request) -> QuerySet[Host]:
        return host_list().select_related("cluster")

    def find(self, request: Request, key: str) -> Host:
        return host_get(name_or_id=key)


    # --- host operations: each one service call, domain errors answered by the API's exception handler ---

    def _answer(self, request: Request, host: Host, message: str, job: Any = None) -> Response:
        host.refresh_from_db()
        body = HostOperationSerializer({"message": message, "host": host, "job": job},
                                       context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED if job is not None else status.HTTP_200_OK)

    @extend_schema(request=HostMaintenanceSerializer, responses={
        202: OpenApiResponse(HostOperationSerializer, description="Preparing: the job moves the VMs away."),
        200: HostOperationSerializer})
    @action(detail=True, methods=["post"], url_path="maintenance", url_name="maintenance")
    def maintenance(self, request: Request, pk: str | None = None) -> Response:
        """Put the host into maintenance: its running VMs are live-migrated away (a job), then it is in maintenance."""
        host = self.find(request, str(pk))
        data = HostMaintenanceSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = maintenance.host_maintenance_start(actor=request.user, via=Via.API, host=host,
                                                 stop_unmovable=data.validated_data["stop_unmovable"])
        if job is None:
            return self._answer(request, host, f"{host.name} is already in maintenance.")
        return self._answer(request, host, f"{host.name} is preparing for maintenance: moving its VMs away.", job)

    @extend_schema(request=None, responses={200: HostOperationSerializer})
    @action(detail=True, methods=["post"], url_path="activate", url_name="activate")
    def activate(self, request: Request, pk: str | None = None) -> Response:
        """Bring the host out of maintenance."""
        host = maintenance.host_activate(actor=request.user, via=Via.API, host=self.find(request, str(pk)))
        return self._answer(request, host, f"{host.name} is active again.")

    @extend_schema(request=None, responses={200: HostOperationSerializer})
    @action(detail=True, methods=["post"], url_path="fence", url_name="fence")
    def fence(self, request: Request, pk: str | None = None) -> Response:
        """Power the host off through its power agent and record it confirmed down (HA VMs restart elsewhere)."""
        host = self.find(request, str(pk))
        result = power.host_fence(actor=request.user, via=Via.API, host=host)
        return self._answer(request, host, f"Fenced {host.name} ({result.summary()}): confirmed down; {ha_outlook(host)}.")

    @extend_schema(request=None, responses={200: HostOperationSerializer})
    @action(detail=True, methods=["post"], url_path="declare-down", url_name="declare-down")
    def declare_down(self, request: Request, pk: str | None = None) -> Response:
        """Confirm the host is off (no power agent): its highly available VMs restart on other hosts."""
        host = power.host_declare_down(actor=request.user, via=Via.API, host=self.find(request, str(pk)))
        return self._answer(request, host, f"{host.name} is declared down: {ha_outlook(host)}.")


class ClusterViewSet(CatalogViewSet):
    """Clusters (staff only, read-only): scheduling policy, balancing, power saving and HA switches, hosts."""

    serializer_class = ClusterSerializer
    permission_classes = [IsAdminUser]
    queryset = Cluster.objects.none()

    def visible(self, request: Request) -> QuerySet[Cluster]:
        return cluster_list()

    def find(self, request: Request, key: str) -> Cluster:
        return cluster_get(name_or_id=key)
