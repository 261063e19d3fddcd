"""Shapes of the hosts and clusters API (administrators only)."""

from __future__ import annotations

from rest_framework import serializers

from cluster.hostconfig import POWER_FIELDS, host_display_address
from cluster.models import Cluster, Host
from cluster.placement import HostLoad, host_loads
from portal.jobs.api.serializers import JobSummarySerializer


class HostSerializer(serializers.ModelSerializer):
    """A host: its settings, what libvirt reports (capacity, state) and what is committed on it (load)."""

    effective_domain_type = serializers.CharField(read_only=True)
    cluster = serializers.SlugRelatedField(slug_field="name", read_only=True)
    vm_count = serializers.SerializerMethodField()
    committed_memory_mib = serializers.SerializerMethodField()
    committed_vcpus = serializers.SerializerMethodField()
    screen_console = serializers.SerializerMethodField(
        help_text="Whether the relay has an address to dial for this host's VNC displays.")
    power_management = serializers.SerializerMethodField(help_text="Whether power agent commands are set.")

    class Meta:
        model = Host
        fields = ["id", "name", "uri", "cluster", "enabled", "status", "status_changed_at", "tags", "domain_type",
                  "effective_domain_type", "kvm_boots_guests", "hostname", "libvirt_version",
                  "cpus", "memory_mib", "free_memory_mib", "committed_memory_mib", "committed_vcpus",
                  "running_domains", "cpu_usage_percent", "vm_count", "max_jobs", "migration_uri",
                  "display_address", "screen_console", "power_management", "failures", "last_seen_at",
                  "last_error", "confirmed_down_at"]
        read_only_fields = fields

    def _load(self, host: Host) -> HostLoad:
        # One aggregate per response, not per host: a list shares it through the serializer's context.
        if "host_loads" not in self.context:
            self.context["host_loads"] = host_loads()
        return self.context["host_loads"].get(host.pk, HostLoad())

    def get_vm_count(self, host: Host) -> int:
        return self._load(host).vms

    def get_committed_memory_mib(self, host: Host) -> int:
        return self._load(host).memory_mib

    def get_committed_vcpus(self, host: Host) -> int:
        return self._load(host).vcpus

    def get_screen_console(self, host: Host) -> bool:
        return host_display_address(host) is not None

    def get_power_management(self, host: Host) -> bool:
        return any(getattr(host, name) for name in POWER_FIELDS)


class ClusterHostSerializer(serializers.ModelSerializer):
    class Meta:
        model = Host
        fields = ["id", "name", "status", "enabled"]
        read_only_fields = fields


class ClusterSerializer(serializers.ModelSerializer):
    """A cluster: its scheduling policy, its switches and its hosts."""

    hosts = ClusterHostSerializer(many=True, read_only=True)

    class Meta:
        model = Cluster
        fields = ["id", "name", "description", "policy", "policy_properties", "balancing_enabled",
                  "power_saving_enabled", "ha_enabled", "hosts"]
        read_only_fields = fields


# --- host operations (maintenance, HA, power): cluster.maintenance, cluster.power -----------------

class HostMaintenanceSerializer(serializers.Serializer):
    stop_unmovable = serializers.BooleanField(
        default=False, help_text="Shut down the VMs that cannot be live-migrated away (else the host waits).")


class HostOperationSerializer(serializers.Serializer):
    """What a host operation did: a message, the host as it is now, and the job (maintenance) if any."""

    message = serializers.CharField()
    host = HostSerializer()
    job = JobSummarySerializer(allow_null=True)
