"""Shapes of the images API."""

from __future__ import annotations

from rest_framework import serializers

from storage.models import Image


class ImageSerializer(serializers.ModelSerializer):
    class Meta:
        model = Image
        fields = ["id", "name", "title", "description", "os_name", "format", "size_bytes", "boot_mode",
                  "min_disk_gib", "cloud_init", "login_user", "kind", "visibility", "owner", "is_default", "created_at"]
        read_only_fields = fields
