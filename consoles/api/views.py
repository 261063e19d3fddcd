"""Console REST endpoints: parse with a serializer, call one consoles service, render.

Domain errors become responses in portal.api.exception_handler (429 carries Retry-After).
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from consoles.services import console_link_create
from portal.api import ErrorSerializer, ValidationErrorSerializer
from portal.choices import Via
from vms.selectors import vm_get

from .serializers import ConsoleLinkRequestSerializer, ConsoleLinkSerializer, RateLimitedErrorSerializer


class VMConsoleLinkView(APIView):
    """A one-time URL to a VM's console page, for scripts and tools holding an API token."""

    @extend_schema(
        operation_id="vms_console_create",
        summary="Get a one-time console URL",
        description=(
            "A URL to the VM's screen or serial terminal page, the same one-time link as Slack's "
            "`/vm console`: it works once, for you only (in a browser signed in to the portal as you), "
            "within PORTAL_CONSOLE_LINK_TTL_SECONDS (5 minutes). Counted by PORTAL_CONSOLE_TICKET_RATE."),
        parameters=[OpenApiParameter("id", OpenApiTypes.STR, OpenApiParameter.PATH,
                                     description="The VM's numeric id or its UUID.")],
        request=ConsoleLinkRequestSerializer,
        responses={
            201: ConsoleLinkSerializer,
            400: OpenApiResponse(ValidationErrorSerializer, description="Unknown `kind`."),
            404: OpenApiResponse(ErrorSerializer, description="Not found, or not yours."),
            429: OpenApiResponse(RateLimitedErrorSerializer, description="Too many console requests."),
        },
        tags=["vms"],
    )
    def post(self, request: Request, pk: str) -> Response:
        """Issue a one-time console link for the VM."""
        params = ConsoleLinkRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        vm = vm_get(user=request.user, vm_id=pk)
        issued = console_link_create(actor=request.user, via=Via.API, vm=vm, kind=params.validated_data["kind"])
        body = ConsoleLinkSerializer({"url": request.build_absolute_uri(issued.path), "kind": issued.kind,
                                      "expires_at": issued.expires_at, "expires_in": issued.ttl_seconds}).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"})
