"""Shapes of the monitoring API's answers (for the OpenAPI schema; the selectors build the dicts)."""

from __future__ import annotations

from rest_framework import serializers


class MetricsQuerySerializer(serializers.Serializer):
    range = serializers.ChoiceField(choices=["1h", "1d", "1w"], default="1h", required=False,
                                    help_text="1h: raw samples of the last hour; 1d: 5-minute rows of the last "
                                              "day; 1w: hourly rows of the last week.")


class PointSerializer(serializers.Serializer):
    t = serializers.IntegerField(help_text="End of the interval the point covers (Unix seconds, UTC).")
    cpu_pct = serializers.FloatField(help_text="CPU use, percent of the VM's vCPUs (host: of its CPUs).")
    mem_used_bytes = serializers.IntegerField(allow_null=True,
                                              help_text="Guest memory in use (from the balloon driver's "
                                                        "statistics; null when the guest reports none).")
    memory_bytes = serializers.IntegerField(help_text="The VM's memory (host: the host's).")
    disk_read_bps = serializers.FloatField(help_text="Bytes read per second, all disks.")
    disk_write_bps = serializers.FloatField()
    net_rx_bps = serializers.FloatField(help_text="Bytes received per second, all interfaces.")
    net_tx_bps = serializers.FloatField()


class VMMetricsSerializer(serializers.Serializer):
    vm = serializers.IntegerField()
    range = serializers.CharField()
    resolution = serializers.ChoiceField(choices=["raw", "5m", "1h"])
    step_seconds = serializers.IntegerField(help_text="Seconds between points (a gap: the VM did not run).")
    points = PointSerializer(many=True)


class HostPointSerializer(PointSerializer):
    running_domains = serializers.IntegerField()


class HostMetricsSerializer(serializers.Serializer):
    host = serializers.IntegerField()
    range = serializers.CharField()
    resolution = serializers.ChoiceField(choices=["raw", "5m", "1h"])
    step_seconds = serializers.IntegerField()
    memory_total_bytes = serializers.IntegerField()
    points = HostPointSerializer(many=True)
