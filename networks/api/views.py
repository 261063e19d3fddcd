"""Networks API: users list the networks they may put VMs on; administrators also define, change and
delete networks and their DHCP reservations. Every write is a networks.services call, so refusals
(overlapping ranges, a network in use) read the same here as in the admin."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from networks.models import Network, NetworkHost
from networks.selectors import network_default_for, network_get, network_reservation_get, network_usable
from networks.services import (
    network_create,
    network_delete,
    network_update,
    reservation_add,
    reservation_remove,
)
from portal.actors import is_admin
from portal.api import INVALID, NAME_OR_ID, NOT_FOUND, ErrorSerializer, Pagination
from portal.choices import Via

from .serializers import (
    NetworkCreateSerializer,
    NetworkSerializer,
    NetworkStaffSerializer,
    NetworkUpdateSerializer,
    ReservationCreateSerializer,
    ReservationSerializer,
)

FORBIDDEN = OpenApiResponse(ErrorSerializer, description="Administrators only.")
IN_USE = OpenApiResponse(ErrorSerializer, description="In use by NICs, or a host could not take the network.")
RESERVATION_ID = OpenApiParameter("rid", OpenApiTypes.STR, OpenApiParameter.PATH,
                                  description="The reservation's numeric id or its MAC.")


class StaffWritesOnly(permissions.BasePermission):
    """Anyone signed in reads; only administrators write."""

    message = "Only administrators change networks."

    def has_permission(self, request: Request, view: Any) -> bool:
        return request.method in permissions.SAFE_METHODS or is_admin(request.user)


@extend_schema_view(
    list=extend_schema(responses={200: NetworkStaffSerializer(many=True)},
                       description="Networks you may put VMs on (administrators: all, with hosts, groups, "
                                   "reservations and users; the extra fields are absent for others)."),
    retrieve=extend_schema(parameters=[NAME_OR_ID], responses={200: NetworkStaffSerializer, 404: NOT_FOUND}),
)
class NetworkViewSet(viewsets.GenericViewSet):
    """Virtual networks for VMs' NICs."""

    serializer_class = NetworkStaffSerializer
    permission_classes = [permissions.IsAuthenticated, StaffWritesOnly]
    pagination_class = Pagination
    filter_backends: list = []
    lookup_value_regex = "[^/]+"
    queryset = Network.objects.none()  # for schema introspection; reads go through networks.selectors

    action_serializers = {"create": NetworkCreateSerializer, "partial_update": NetworkUpdateSerializer,
                          "reservations": ReservationCreateSerializer, "reservation": ReservationSerializer}

    def get_serializer_class(self) -> type[BaseSerializer]:
        return self.action_serializers.get(self.action, NetworkStaffSerializer)

    def _render(self, request: Request, data: Any, *, many: bool = False) -> Any:
        """Staff get the full shape; users the short one. `preselected` marks the requester's default."""
        default = network_default_for(user=request.user)
        context = {"request": request, "preselected_id": default.pk if default else None}
        serializer = NetworkStaffSerializer if is_admin(request.user) else NetworkSerializer
        return serializer(data, many=many, context=context).data

    def _visible(self, request: Request) -> QuerySet[Network]:
        qs = network_usable(user=request.user)
        if is_admin(request.user):
            qs = qs.prefetch_related(
                Prefetch("placements", queryset=NetworkHost.objects.select_related("host").order_by("host__name")),
                "groups", "reservations")
        return qs

    def _get(self, request: Request, pk: object) -> Network:
        return network_get(user=request.user, key=pk)

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self._visible(request))
        return self.get_paginated_response(self._render(request, page, many=True))

    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        return Response(self._render(request, self._get(request, pk)))

    @extend_schema(request=NetworkCreateSerializer,
                   responses={201: NetworkStaffSerializer, 400: INVALID, 403: FORBIDDEN, 409: IN_USE})
    def create(self, request: Request) -> Response:
        """Define a network (administrators): on each of its hosts at once, or not at all."""
        data = NetworkCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        network = network_create(actor=request.user, via=Via.API, **data.validated_data)
        body = self._render(request, network)
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": body["url"]})

    @extend_schema(parameters=[NAME_OR_ID], request=NetworkUpdateSerializer,
                   responses={200: NetworkStaffSerializer, 400: INVALID, 403: FORBIDDEN, 404: NOT_FOUND,
                              409: IN_USE})
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        """Change a network (administrators). Addresses and mode change only while no NIC uses it."""
        network = self._get(request, pk)
        data = NetworkUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        network = network_update(actor=request.user, via=Via.API, network=network, **data.validated_data)
        return Response(self._render(request, network))

    @extend_schema(parameters=[NAME_OR_ID], request=None,
                   responses={204: None, 403: FORBIDDEN, 404: NOT_FOUND, 409: IN_USE})
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        """Delete a network from every host (administrators); refused while any NIC uses it."""
        network_delete(actor=request.user, via=Via.API, network=self._get(request, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(methods=["GET"], parameters=[NAME_OR_ID], request=None,
                   responses={200: ReservationSerializer(many=True), 403: FORBIDDEN, 404: NOT_FOUND})
    @extend_schema(methods=["POST"], parameters=[NAME_OR_ID], request=ReservationCreateSerializer,
                   responses={201: ReservationSerializer, 400: INVALID, 403: FORBIDDEN, 404: NOT_FOUND})
    @action(detail=True, methods=["get", "post"], url_path="reservations", url_name="reservations",
            permission_classes=[permissions.IsAdminUser])
    def reservations(self, request: Request, pk: str | None = None) -> Response:
        """GET: the network's static DHCP leases. POST: reserve an address for a MAC (administrators)."""
        network = self._get(request, pk)
        if request.method == "GET":
            page = self.paginate_queryset(network.reservations.order_by("ip"))
            return self.get_paginated_response(
                ReservationSerializer(page, many=True, context={"request": request}).data)
        data = ReservationCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        reservation = reservation_add(actor=request.user, via=Via.API, network=network, **data.validated_data)
        body = ReservationSerializer(reservation, context={"request": request}).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": body["url"]})

    @extend_schema(methods=["GET"], parameters=[NAME_OR_ID, RESERVATION_ID], request=None,
                   responses={200: ReservationSerializer, 403: FORBIDDEN, 404: NOT_FOUND})
    @extend_schema(methods=["DELETE"], parameters=[NAME_OR_ID, RESERVATION_ID], request=None,
                   responses={204: None, 403: FORBIDDEN, 404: NOT_FOUND})
    @action(detail=True, methods=["get", "delete"], url_path=r"reservations/(?P<rid>[^/]+)",
            url_name="reservation", permission_classes=[permissions.IsAdminUser])
    def reservation(self, request: Request, pk: str | None = None, rid: str | None = None) -> Response:
        """GET: one reservation (by id or MAC). DELETE: remove it (administrators)."""
        found = network_reservation_get(network=self._get(request, pk), key=rid)
        if request.method == "GET":
            return Response(ReservationSerializer(found, context={"request": request}).data)
        reservation_remove(actor=request.user, via=Via.API, reservation=found)
        return Response(status=status.HTTP_204_NO_CONTENT)
