"""Shapes of the hosts API."""

from __future__ import annotations

from rest_framework import serializers

from cluster.models import Host
from cluster.placement import HostLoad, host_loads
from portal.jobs.api.serializers import JobSummarySerializer


class HostSerializer(serializers.ModelSerializer):
    effective_domain_type = serializers.CharField(read_only=True)
    vm_count = serializers.SerializerMethodField()

    class Meta:
        model = Host
        fields = ["id", "name", "uri", "enabled", "status", "domain_type", "effective_domain_type",
                  "kvm_boots_guests", "hostname", "libvirt_version", "cpus", "memory_mib", "free_memory_mib",
                  "last_seen_at", "last_error", "vm_count"]
        read_only_fields = fields

    def get_vm_count(self, host: Host) -> int:
        # One aggregate per response, not per host: a list shares it through the serializer's context.
        if "host_loads" not in self.context:
            self.context["host_loads"] = host_loads()
        return self.context["host_loads"].get(host.pk, HostLoad()).vms


# --- host operations (maintenance, HA, power): cluster.maintenance, cluster.power -----------------

class HostMaintenanceSerializer(serializers.Serializer):
    stop_unmovable = serializers.BooleanField(
        default=False, help_text="Shut down the VMs that cannot be live-migrated away (else the host waits).")


class HostOperationSerializer(serializers.Serializer):
    """What a host operation did: a message, the host as it is now, and the job (maintenance) if any."""

    message = serializers.CharField()
    host = HostSerializer()
    job = JobSummarySerializer(allow_null=True)
