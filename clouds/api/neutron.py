"""Neutron networks of a cloud through the API (administrators only): list them with the portal network
that mirrors each, import one, compare, re-sync, unlink. Every write is one clouds.neutron call; errors
are JSON 4xx through portal.api (an overlapping subnet is a 400 naming the portal network it overlaps)."""

from __future__ import annotations

from typing import Any

from django.urls import path
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from clouds import neutron
from clouds.models import NeutronLink
from clouds.selectors import cloud_get
from networks.models import Network
from portal.api import INVALID, NOT_FOUND, ErrorSerializer
from portal.choices import Via
from portal.exceptions import NotFound

from .views import AdminsOnly

FORBIDDEN = OpenApiResponse(ErrorSerializer, description="Administrators only.")
CLOUD = OpenApiParameter("cloud", str, OpenApiParameter.PATH, description="The cloud's numeric id or its name.")
NEUTRON_ID = OpenApiParameter("neutron_id", str, OpenApiParameter.PATH, description="The Neutron network's id.")
LINK = OpenApiParameter("link", int, OpenApiParameter.PATH, description="The link's id.")


# --- shapes --------------------------------------------------------------------------------------------

class NeutronSubnetSerializer(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    cidr = serializers.CharField()
    ip_version = serializers.IntegerField()
    gateway_ip = serializers.CharField(allow_null=True)
    allocation_pools = serializers.ListField(child=serializers.DictField(child=serializers.CharField()))
    dns_nameservers = serializers.ListField(child=serializers.CharField())
    enable_dhcp = serializers.BooleanField()
    mirrorable = serializers.BooleanField(source="usable", help_text="IPv4 subnets only are mirrored.")


class LinkSerializer(serializers.ModelSerializer):
    cloud = serializers.SlugRelatedField(slug_field="name", read_only=True)
    network = serializers.SlugRelatedField(slug_field="name", read_only=True)
    network_id = serializers.IntegerField(read_only=True)

    class Meta:
        model = NeutronLink
        fields = ["id", "cloud", "network", "network_id", "neutron_network_id", "neutron_subnet_id", "neutron_name",
                  "state", "differences", "notes", "synced_at", "checked_at"]
        read_only_fields = fields


class NeutronNetworkSerializer(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    status = serializers.CharField()
    subnets = NeutronSubnetSerializer(many=True)
    mirrored_by = serializers.SerializerMethodField(help_text="The portal network that mirrors it, or null.")
    link = LinkSerializer(allow_null=True)
    not_mirrored = serializers.ListField(child=serializers.CharField())

    def get_mirrored_by(self, obj: neutron.NeutronNetwork) -> str | None:
        return obj.mirrored_by.name if obj.mirrored_by is not None else None


class ImportSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, allow_blank=True, default="",
                                 help_text="The portal network's name (default: from the Neutron name).")
    mode = serializers.ChoiceField(choices=Network.Mode.choices, required=False, default=Network.Mode.ISOLATED)
    bridge = serializers.CharField(required=False, allow_blank=True, default="")
    hosts = serializers.ListField(child=serializers.CharField(), required=False,
                                  help_text="Portal hosts (names or ids); not given: every enabled host.")
    groups = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    is_public = serializers.BooleanField(required=False, default=False)
    subnet_id = serializers.CharField(required=False, allow_blank=True, default="",
                                      help_text="Which IPv4 subnet (default: the network's first).")


class LinkReportSerializer(serializers.Serializer):
    link = LinkSerializer()
    state = serializers.CharField()
    differences = serializers.ListField(child=serializers.DictField())
    gone = serializers.CharField()
    applied = serializers.ListField(child=serializers.CharField())
    error = serializers.CharField()


class DiffSerializer(serializers.Serializer):
    links = LinkReportSerializer(many=True)
    not_mirrored = NeutronNetworkSerializer(many=True)


class SyncSerializer(serializers.Serializer):
    network = serializers.CharField(required=False, allow_blank=True, default="",
                                    help_text="Only this portal network (default: every mirrored one).")


# --- views ---------------------------------------------------------------------------------------------

class _Base(APIView):
    permission_classes = [IsAuthenticated, AdminsOnly]


class NeutronNetworksView(_Base):
    @extend_schema(parameters=[CLOUD], responses={200: NeutronNetworkSerializer(many=True), 403: FORBIDDEN,
                                                  404: NOT_FOUND})
    def get(self, request: Request, cloud: str) -> Response:
        """The cloud's Neutron networks and subnets, each with the portal network that mirrors it."""
        found = neutron.neutron_networks(actor=request.user, cloud=cloud_get(actor=request.user, key=cloud))
        return Response(NeutronNetworkSerializer(found, many=True).data)


class NeutronImportView(_Base):
    @extend_schema(parameters=[CLOUD, NEUTRON_ID], request=ImportSerializer,
                   responses={201: LinkSerializer, 400: INVALID, 403: FORBIDDEN, 404: NOT_FOUND})
    def post(self, request: Request, cloud: str, neutron_id: str) -> Response:
        """Create the portal network that mirrors this Neutron network (nothing is created on a refusal)."""
        the_cloud = cloud_get(actor=request.user, key=cloud)
        data = ImportSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v: dict[str, Any] = dict(data.validated_data)
        link = neutron.neutron_import(actor=request.user, via=Via.API, cloud=the_cloud, neutron_network_id=neutron_id,
                                      name=v["name"] or None, mode=v["mode"], bridge=v["bridge"], hosts=v.get("hosts"),
                                      groups=v["groups"], is_public=v["is_public"], subnet_id=v["subnet_id"] or None)
        return Response(LinkSerializer(link).data, status=status.HTTP_201_CREATED)


class NeutronDiffView(_Base):
    @extend_schema(parameters=[CLOUD], responses={200: DiffSerializer, 403: FORBIDDEN, 404: NOT_FOUND})
    def get(self, request: Request, cloud: str) -> Response:
        """Every mirrored network compared with Neutron now (recorded, not applied), and what is not mirrored."""
        report = neutron.neutron_diff(actor=request.user, cloud=cloud_get(actor=request.user, key=cloud))
        return Response(DiffSerializer(report).data)


class NeutronSyncView(_Base):
    @extend_schema(parameters=[CLOUD], request=SyncSerializer,
                   responses={200: LinkReportSerializer(many=True), 403: FORBIDDEN, 404: NOT_FOUND})
    def post(self, request: Request, cloud: str) -> Response:
        """Apply Neutron's definition to the mirrored networks (or one); each says what was applied or why not."""
        the_cloud = cloud_get(actor=request.user, key=cloud)
        data = SyncSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        reports = neutron.neutron_sync(actor=request.user, via=Via.API, cloud=the_cloud,
                                       network=data.validated_data["network"] or None)
        return Response(LinkReportSerializer(reports, many=True).data)


class NeutronLinkView(_Base):
    @extend_schema(parameters=[CLOUD, LINK], request=None, responses={204: None, 403: FORBIDDEN, 404: NOT_FOUND})
    def delete(self, request: Request, cloud: str, link: int) -> Response:
        """Unlink: the portal network stays as it is and no longer mirrors the Neutron network."""
        the_cloud = cloud_get(actor=request.user, key=cloud)
        found = NeutronLink.objects.filter(cloud=the_cloud, pk=link).select_related("network", "cloud").first()
        if found is None:
            raise NotFound(f"Cloud {the_cloud.name} has no network link {link}.")
        neutron.neutron_unlink(actor=request.user, via=Via.API, link=found)
        return Response(status=status.HTTP_204_NO_CONTENT)


urlpatterns = [
    path("clouds/<str:cloud>/neutron/networks/", NeutronNetworksView.as_view(), name="api-cloud-neutron-networks"),
    path("clouds/<str:cloud>/neutron/networks/<str:neutron_id>/import/", NeutronImportView.as_view(),
         name="api-cloud-neutron-import"),
    path("clouds/<str:cloud>/neutron/diff/", NeutronDiffView.as_view(), name="api-cloud-neutron-diff"),
    path("clouds/<str:cloud>/neutron/sync/", NeutronSyncView.as_view(), name="api-cloud-neutron-sync"),
    path("clouds/<str:cloud>/neutron/links/<int:link>/", NeutronLinkView.as_view(), name="api-cloud-neutron-link"),
]
