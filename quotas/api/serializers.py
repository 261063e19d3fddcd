"""Shapes of the quota API."""

from __future__ import annotations

from rest_framework import serializers


class ResourceUsageSerializer(serializers.Serializer):
    resource = serializers.CharField()
    label = serializers.CharField()
    unit = serializers.CharField()
    used = serializers.IntegerField()
    limit = serializers.IntegerField()
    remaining = serializers.IntegerField()
    percent = serializers.IntegerField()


class QuotaSubjectSerializer(serializers.Serializer):
    subject = serializers.CharField(help_text="'user' or 'group'.")
    name = serializers.CharField()
    resources = ResourceUsageSerializer(many=True)


class QuotaOverviewSerializer(serializers.Serializer):
    user = QuotaSubjectSerializer(help_text="Your personal quota (VMs without a group).")
    groups = QuotaSubjectSerializer(many=True, help_text="Quotas of the groups you belong to.")
    vm_limits = serializers.DictField(child=serializers.ListField(child=serializers.IntegerField()),
                                      help_text="Smallest and largest size of any single VM: [min, max].")
