"""Hosts API (staff only, read-only)."""

from __future__ import annotations

from django.db.models import QuerySet
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request

from cluster.models import Host
from cluster.selectors import host_get, host_list
from portal.api import CatalogViewSet

from .serializers import HostSerializer


class HostViewSet(CatalogViewSet):
    """Hypervisor hosts (staff only, read-only)."""

    serializer_class = HostSerializer
    permission_classes = [IsAdminUser]
    queryset = Host.objects.none()

    def visible(self, request: Request) -> QuerySet[Host]:
        return host_list()

    def find(self, request: Request, key: str) -> Host:
        return host_get(name_or_id=key)
