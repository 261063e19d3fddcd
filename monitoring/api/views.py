"""Monitoring over REST: a VM's samples (whoever may see the VM) and a host's (administrators).
Parse the range, call one selector, render; a bad range is a JSON 400, others' VMs are 404."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from monitoring import selectors
from portal.api import INVALID, NOT_FOUND, ErrorSerializer

from .serializers import HostMetricsSerializer, MetricsQuerySerializer, VMMetricsSerializer

VM_ID = OpenApiParameter("vm_id", OpenApiTypes.STR, OpenApiParameter.PATH,
                         description="The VM's numeric id or its UUID.")
HOST_ID = OpenApiParameter("host_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The host's id.")


class VMMetricsView(APIView):
    """CPU, memory, disk and network of one VM over the last hour, day or week."""

    @extend_schema(parameters=[VM_ID, MetricsQuerySerializer],
                   responses={200: VMMetricsSerializer, 400: INVALID, 404: NOT_FOUND},
                   operation_id="vms_metrics", tags=["monitoring"])
    def get(self, request: Request, vm_id: str) -> Response:
        """The VM's samples, oldest first: `?range=1h` (raw, one per collector interval), `1d` (5-minute
        averages) or `1w` (hourly averages). Rates are per second over each point's interval."""
        return Response(selectors.vm_metrics(actor=request.user, vm_id=vm_id,
                                             range_key=request.query_params.get("range", "1h")))


class HostMetricsView(APIView):
    """What one host carries over the last hour, day or week (administrators)."""

    @extend_schema(parameters=[HOST_ID, MetricsQuerySerializer],
                   responses={200: HostMetricsSerializer, 400: INVALID,
                              403: OpenApiResponse(ErrorSerializer, description="Administrators only."),
                              404: NOT_FOUND},
                   operation_id="hosts_metrics", tags=["monitoring"])
    def get(self, request: Request, host_id: str) -> Response:
        """The host's samples, oldest first (same ranges as a VM's)."""
        return Response(selectors.host_metrics(actor=request.user, host_id=host_id,
                                               range_key=request.query_params.get("range", "1h")))
