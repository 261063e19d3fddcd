"""Shapes of the VM pools API."""

from __future__ import annotations

from rest_framework import serializers

from pools.models import VMPool


class PoolSerializer(serializers.ModelSerializer):
    image = serializers.SlugRelatedField(slug_field="name", read_only=True)
    flavor = serializers.SlugRelatedField(slug_field="name", read_only=True)
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    groups = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)
    free = serializers.IntegerField(source="n_free", read_only=True)
    taken = serializers.IntegerField(source="n_taken", read_only=True)
    size = serializers.IntegerField(source="n_live", read_only=True)

    class Meta:
        model = VMPool
        fields = ["id", "name", "description", "image", "flavor", "vcpus", "memory_mib", "disk_gib", "prestarted",
                  "max_size", "stateless", "everyone", "groups", "owner", "free", "taken", "size", "created_at"]


class PoolWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=40, required=False)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    image = serializers.CharField(max_length=100, required=False)
    flavor = serializers.CharField(max_length=40, required=False, allow_blank=True)
    vcpus = serializers.IntegerField(required=False, min_value=1)
    memory_mib = serializers.IntegerField(required=False, min_value=1)
    disk_gib = serializers.IntegerField(required=False, min_value=1)
    prestarted = serializers.IntegerField(required=False, min_value=0)
    max_size = serializers.IntegerField(required=False, min_value=1)
    stateless = serializers.BooleanField(required=False)
    everyone = serializers.BooleanField(required=False)
    groups = serializers.ListField(child=serializers.CharField(max_length=150), required=False)
    owner = serializers.CharField(max_length=150, required=False)


class TakeSerializer(serializers.Serializer):
    vm_id = serializers.IntegerField()
    vm = serializers.CharField()
    url = serializers.CharField()
    message = serializers.CharField()


class ReturnSerializer(serializers.Serializer):
    vm = serializers.CharField(help_text="The held VM's numeric id.")
