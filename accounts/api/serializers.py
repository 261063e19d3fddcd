"""Shapes of the SSH keys API: input parses types only (accounts.validation checks the key)."""

from __future__ import annotations

from rest_framework import serializers

from accounts.models import SSHKey


class SSHKeySerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api-key-detail")
    type = serializers.CharField(source="key_type", read_only=True,
                                 help_text="ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa.")

    class Meta:
        model = SSHKey
        fields = ["id", "url", "name", "type", "bits", "fingerprint", "public_key", "created_at", "created_via"]
        read_only_fields = fields


class SSHKeyCreateSerializer(serializers.Serializer):
    public_key = serializers.CharField(trim_whitespace=False,
                                       help_text='One line of your .pub file: "type base64 [comment]".')
    name = serializers.CharField(required=False, allow_blank=True, allow_null=True, trim_whitespace=False,
                                 help_text="At most 60 characters; the key's comment when omitted.")
