"""Hosts and clusters API (staff only, read-only)."""

from __future__ import annotations

from django.db.models import QuerySet
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request

from cluster.models import Cluster, Host
from cluster.selectors import cluster_get, cluster_list, host_get, host_list
from portal.api import CatalogViewSet

from .serializers import ClusterSerializer, HostSerializer


class HostViewSet(CatalogViewSet):
    """Hypervisor hosts (staff only, read-only): settings, capacity, load and state."""

    serializer_class = HostSerializer
    permission_classes = [IsAdminUser]
    queryset = Host.objects.none()

    def visible(self, request: Request) -> QuerySet[Host]:
        return host_list().select_related("cluster")

    def find(self, request: Request, key: str) -> Host:
        return host_get(name_or_id=key)


class ClusterViewSet(CatalogViewSet):
    """Clusters (staff only, read-only): scheduling policy, balancing, power saving and HA switches, hosts."""

    serializer_class = ClusterSerializer
    permission_classes = [IsAdminUser]
    queryset = Cluster.objects.none()

    def visible(self, request: Request) -> QuerySet[Cluster]:
        return cluster_list()

    def find(self, request: Request, key: str) -> Cluster:
        return cluster_get(name_or_id=key)
