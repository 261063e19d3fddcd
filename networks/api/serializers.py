"""Shapes of the networks API: input serializers parse types only (networks.services checks the rest),
output serializers render rows. Users see what they need to pick a network; staff also see where it
runs, who may use it, its reservations and what uses it."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from networks.models import Network, NetworkHost, Reservation
from networks.usage import network_users
from portal.api import row_url


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "integer"}]})
class NameOrIdField(serializers.CharField):
    """A host or group given by name or by numeric id."""


def mode_field(**kwargs: Any) -> serializers.ChoiceField:
    """A network mode (the same enum as the output's `mode` in the schema)."""
    return serializers.ChoiceField(choices=Network.Mode.choices, **kwargs)


class OptionalBooleanField(serializers.BooleanField):
    # DRF treats a missing checkbox in form-encoded input as False; here omitted means "unchanged".
    default_empty_html = serializers.empty


# --- input ---------------------------------------------------------------------------------------

class NetworkCreateSerializer(serializers.Serializer):
    name = serializers.CharField(allow_blank=True, help_text="2-40 lowercase letters, digits or hyphens.")
    mode = mode_field(required=False, default=Network.Mode.ISOLATED,
                      help_text="isolated (VMs and the host only), nat (outbound through the host) or bridge.")
    cidr = serializers.CharField(required=False, allow_blank=True, default="",
                                 help_text="IPv4 subnet, e.g. 10.100.0.0/24 (isolated and NAT; empty for bridge).")
    dhcp_start = serializers.CharField(required=False, allow_blank=True, allow_null=True, default=None,
                                       help_text="First DHCP address; with dhcp_end, or both omitted.")
    dhcp_end = serializers.CharField(required=False, allow_blank=True, allow_null=True, default=None)
    gateway = serializers.CharField(required=False, allow_blank=True, allow_null=True, default=None,
                                    help_text="The host's address on the network (default: the subnet's first).")
    dns_servers = serializers.ListField(child=serializers.CharField(), required=False, default=list,
                                        help_text="DNS servers the host forwards guests' queries to.")
    bridge = serializers.CharField(required=False, allow_blank=True, default="",
                                   help_text="Bridged networks: the existing bridge on each host, e.g. br0.")
    hosts = serializers.ListField(child=NameOrIdField(), required=False, default=list,
                                  help_text="Hosts (names or ids) to define the network on.")
    groups = serializers.ListField(child=NameOrIdField(), required=False, default=list,
                                   help_text="Groups (names or ids) whose members may use it.")
    is_public = serializers.BooleanField(required=False, default=False, help_text="Open to all users.")
    is_default = serializers.BooleanField(required=False, default=False,
                                          help_text="Preselected for new VMs of users who may use it.")
    title = serializers.CharField(required=False, allow_blank=True, default="")
    description = serializers.CharField(required=False, allow_blank=True, default="")


class NetworkUpdateSerializer(serializers.Serializer):
    """Only the fields given change; addresses and mode only while no NIC uses the network."""

    mode = mode_field(required=False)
    cidr = serializers.CharField(required=False, allow_blank=True)
    dhcp_start = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    dhcp_end = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    gateway = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    dns_servers = serializers.ListField(child=serializers.CharField(), required=False)
    bridge = serializers.CharField(required=False, allow_blank=True)
    hosts = serializers.ListField(child=NameOrIdField(), required=False)
    groups = serializers.ListField(child=NameOrIdField(), required=False)
    is_public = OptionalBooleanField(required=False)
    is_default = OptionalBooleanField(required=False)
    title = serializers.CharField(required=False, allow_blank=True)
    description = serializers.CharField(required=False, allow_blank=True)


class ReservationCreateSerializer(serializers.Serializer):
    mac = serializers.CharField(allow_blank=True, help_text="The NIC's MAC, e.g. 52:54:00:12:34:56.")
    ip = serializers.CharField(allow_blank=True, help_text="An address of the network's range (not the host's).")
    hostname = serializers.CharField(required=False, allow_blank=True, default="")


# --- output --------------------------------------------------------------------------------------

class ReservationSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = Reservation
        fields = ["id", "mac", "ip", "hostname", "created_at", "url"]
        read_only_fields = fields

    def get_url(self, reservation: Reservation) -> str:
        return row_url(self.context, "api-network-reservation", pk=reservation.network_id, rid=reservation.pk)


class NetworkPlacementSerializer(serializers.ModelSerializer):
    """The network on one host: whether libvirt runs it there, its bridge, the last error."""

    host = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = NetworkHost
        fields = ["host", "active", "bridge", "last_error", "synced_at"]
        read_only_fields = fields


class NetworkSerializer(serializers.ModelSerializer):
    """A network as users see it: enough to choose it for a VM."""

    mode_label = serializers.CharField(source="get_mode_display", read_only=True)
    preselected = serializers.SerializerMethodField(
        help_text="New VMs get a NIC on this network when `networks` is omitted.")
    url = serializers.SerializerMethodField()

    class Meta:
        model = Network
        fields = ["id", "name", "title", "description", "mode", "mode_label", "cidr", "is_default",
                  "preselected", "url"]
        read_only_fields = fields

    def get_preselected(self, network: Network) -> bool:
        return self.context.get("preselected_id") == network.pk

    def get_url(self, network: Network) -> str:
        return row_url(self.context, "api-network-detail", pk=network.pk)


class NetworkStaffSerializer(NetworkSerializer):
    """A network as administrators see it: also its shape, hosts, access, reservations and users."""

    hosts = NetworkPlacementSerializer(source="placements", many=True, read_only=True)
    groups = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)
    reservations = ReservationSerializer(many=True, read_only=True)
    used_by = serializers.SerializerMethodField(help_text="What has NICs on it, as \"vm (owner)\".")

    class Meta(NetworkSerializer.Meta):
        fields = [*NetworkSerializer.Meta.fields, "uuid", "libvirt_name", "bridge", "dhcp_start", "dhcp_end",
                  "gateway", "dns_servers", "is_public", "groups", "hosts", "reservations", "used_by", "created_at"]
        read_only_fields = fields

    def get_used_by(self, network: Network) -> list[str]:
        return network_users(network)
